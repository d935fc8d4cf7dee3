//! `wharf shim`: one process per container, single-threaded and without an async runtime,
//! because libcontainer clone3()s the calling process.
//!
//! `wharf shim run` owns a container for its whole life (stdio or pty, json-file log, attach
//! socket, exit record); `wharf shim exec` runs one process inside a running container. The
//! contract with the engine is described in docs/ARCHITECTURE.md ("The shim contract").

mod exec;
mod log;
mod run;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ArgsError {
    #[error("flag {0} needs a value")]
    MissingValue(String),
    #[error("unknown flag {0}")]
    Unknown(String),
    #[error("missing required flag {0}")]
    Missing(&'static str),
}

/// Options of `wharf shim run`.
#[derive(Debug, Default)]
pub(crate) struct RunArgs {
    pub id: String,
    pub bundle: PathBuf,
    pub state: PathBuf,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
    /// Become a session leader in place instead of double-forking; the caller reaps the shim.
    pub session: bool,
}

/// Options of `wharf shim exec`.
#[derive(Debug, Default)]
pub(crate) struct ExecArgs {
    pub id: String,
    pub state: PathBuf,
    pub process: PathBuf,
    pub tty: bool,
    pub report: Option<PathBuf>,
}

const USAGE: &str = "usage:
  wharf shim run --id ID --bundle DIR --state DIR --dir DIR --log FILE [--tty] [--stdin] [--stdin-once] [--session]
  wharf shim exec --id ID --state DIR --process FILE [--tty] [--report SOCKET]
  wharf shim spare   (reads the arguments of run from stdin)";

/// Splits `--flag value` / `--flag=value` pairs and switches.
fn parse_flags(
    args: &[String],
    switches: &[&str],
    mut on: impl FnMut(&str, Option<String>) -> Result<(), ArgsError>,
) -> Result<(), ArgsError> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        if switches.contains(&flag) {
            on(flag, None)?;
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| ArgsError::MissingValue(flag.to_string()))?,
        };
        on(flag, Some(value))?;
    }
    Ok(())
}

fn parse_run(args: &[String]) -> Result<RunArgs, ArgsError> {
    let mut r = RunArgs::default();
    parse_flags(
        args,
        &["--tty", "--stdin", "--stdin-once", "--session"],
        |flag, value| {
            let v = value.unwrap_or_default();
            match flag {
                "--id" => r.id = v,
                "--bundle" => r.bundle = v.into(),
                "--state" => r.state = v.into(),
                "--dir" => r.dir = v.into(),
                "--log" => r.log = v.into(),
                "--tty" => r.tty = true,
                "--stdin" => r.stdin = true,
                "--stdin-once" => r.stdin_once = true,
                "--session" => r.session = true,
                other => return Err(ArgsError::Unknown(other.to_string())),
            }
            Ok(())
        },
    )?;
    for (name, empty) in [
        ("--id", r.id.is_empty()),
        ("--bundle", r.bundle.as_os_str().is_empty()),
        ("--state", r.state.as_os_str().is_empty()),
        ("--dir", r.dir.as_os_str().is_empty()),
        ("--log", r.log.as_os_str().is_empty()),
    ] {
        if empty {
            return Err(ArgsError::Missing(name));
        }
    }
    Ok(r)
}

fn parse_exec(args: &[String]) -> Result<ExecArgs, ArgsError> {
    let mut e = ExecArgs::default();
    parse_flags(args, &["--tty"], |flag, value| {
        let v = value.unwrap_or_default();
        match flag {
            "--id" => e.id = v,
            "--state" => e.state = v.into(),
            "--process" => e.process = v.into(),
            "--report" => e.report = Some(v.into()),
            "--tty" => e.tty = true,
            other => return Err(ArgsError::Unknown(other.to_string())),
        }
        Ok(())
    })?;
    for (name, empty) in [
        ("--id", e.id.is_empty()),
        ("--state", e.state.as_os_str().is_empty()),
        ("--process", e.process.as_os_str().is_empty()),
    ] {
        if empty {
            return Err(ArgsError::Missing(name));
        }
    }
    Ok(e)
}

/// Entry point of `wharf shim ...`: `argv[1]` is "shim".
pub fn main() -> ExitCode {
    dispatch(std::env::args().skip(2).collect())
}

/// Entry point of the standalone `wharf-shim ...` binary.
pub fn standalone_main() -> ExitCode {
    dispatch(std::env::args().skip(1).collect())
}

fn dispatch(args: Vec<String>) -> ExitCode {
    match args.first().map(String::as_str) {
        Some("run") => match parse_run(&args[1..]) {
            Ok(a) => run::run(a),
            Err(e) => usage_error(&e),
        },
        Some("exec") => match parse_exec(&args[1..]) {
            Ok(a) => exec::exec(a),
            Err(e) => usage_error(&e),
        },
        Some("spare") => spare(),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// `wharf shim spare`: a shim the engine starts ahead of need. It waits for `run` and its
/// arguments on stdin (NUL-separated, ended by EOF) and then runs as `wharf shim run` would, so a
/// container's start does not wait for the shim's exec and dynamic loading. EOF without
/// arguments (the engine went away) ends it.
fn spare() -> ExitCode {
    use std::io::Read;
    let mut raw = Vec::new();
    if std::io::stdin().lock().read_to_end(&mut raw).is_err() || raw.is_empty() {
        return ExitCode::SUCCESS;
    }
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    match args.split_first() {
        Some((verb, rest)) if verb == "run" => match parse_run(rest) {
            Ok(a) => run::run(a),
            Err(e) => usage_error(&e),
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn usage_error(e: &ArgsError) -> ExitCode {
    eprintln!("wharf shim: {e}\n{USAGE}");
    ExitCode::from(2)
}

/// The exit code Docker gives a process that could not be started, from the runtime's words.
pub(crate) fn start_failure_code(message: &str) -> u8 {
    if message.contains("executable file not found")
        || message.contains("no such file or directory")
    {
        127
    } else if message.contains("permission denied") {
        126
    } else {
        125
    }
}

/// Docker's exit code for a wait status: the code, or 128 + the signal that killed it.
pub(crate) fn exit_code(status: nix::sys::wait::WaitStatus) -> Option<i32> {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn run_flags() {
        let r = parse_run(&v(
            "--id x --bundle /b --state=/s --dir /d --log /l --tty --stdin-once --session",
        ))
        .unwrap();
        assert_eq!(r.id, "x");
        assert!(r.session);
        assert_eq!(r.state, PathBuf::from("/s"));
        assert!(r.tty && r.stdin_once && !r.stdin);
        assert!(matches!(
            parse_run(&v("--id x")),
            Err(ArgsError::Missing("--bundle"))
        ));
        assert!(matches!(
            parse_run(&v("--bogus 1")),
            Err(ArgsError::Unknown(_))
        ));
        assert!(matches!(
            parse_run(&v("--id")),
            Err(ArgsError::MissingValue(_))
        ));
    }

    #[test]
    fn exec_flags() {
        let e = parse_exec(&v(
            "--id x --state /s --process /p.json --tty --report /r.sock",
        ))
        .unwrap();
        assert_eq!(e.process, PathBuf::from("/p.json"));
        assert_eq!(e.report, Some(PathBuf::from("/r.sock")));
        assert!(parse_exec(&v("--id x --state /s")).is_err());
    }

    #[test]
    fn codes() {
        use nix::sys::signal::Signal;
        use nix::sys::wait::WaitStatus;
        use nix::unistd::Pid;
        assert_eq!(exit_code(WaitStatus::Exited(Pid::from_raw(1), 3)), Some(3));
        assert_eq!(
            exit_code(WaitStatus::Signaled(
                Pid::from_raw(1),
                Signal::SIGKILL,
                false
            )),
            Some(137)
        );
        assert_eq!(
            start_failure_code("exec: \"x\": executable file not found in $PATH"),
            127
        );
        assert_eq!(start_failure_code("exec: \"/etc\": permission denied"), 126);
        assert_eq!(start_failure_code("cgroup: no such device"), 125);
    }
}
