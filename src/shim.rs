//! `wharf-shim`: the per-container shim alone (`wharf-shim run ...`, `wharf-shim exec ...`),
//! the same code as `wharf shim ...` without the CLI, daemon and engine linked in.

use std::process::ExitCode;

fn main() -> ExitCode {
    wharf_shim::standalone_main()
}
