//! The one `wharf` binary: the CLI, the daemon and the per-container shim.
//! The shim is dispatched before anything else so it never pays for a tokio runtime.

use std::process::ExitCode;

fn main() -> ExitCode {
    match std::env::args_os()
        .nth(1)
        .as_deref()
        .and_then(|a| a.to_str())
    {
        Some("shim") => wharf_shim::main(),
        Some("daemon") => wharf_daemon::main(),
        _ => wharf_cli::main(),
    }
}
