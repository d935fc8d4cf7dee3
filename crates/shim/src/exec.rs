//! `wharf shim exec`: one process inside a running container, with the stdio the engine gave
//! this process (or a pty), then exit with the process's status.
//!
//! With `--report SOCKET` the shim connects to the engine's socket and sends one line:
//! `ok <pid>` (for `--tty` with the pty master attached as SCM_RIGHTS) or `err <message>`.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use wharf_runtime::{ExecOptions, Stdio};

use crate::ExecArgs;

pub(crate) fn exec(args: ExecArgs) -> ExitCode {
    let mut report = args.report.as_ref().and_then(|p| {
        wharf_runtime::socket::SocketPath::new(p)
            .and_then(|p| UnixStream::connect(p.path()))
            .ok()
    });
    let console_path = args
        .state
        .join(format!("exec-{}.console", std::process::id()));
    let result = start(&args, &console_path);
    let _ = std::fs::remove_file(&console_path);
    let (pid, master) = match result {
        Ok(v) => v,
        Err(message) => {
            let message = message.replace('\n', " ");
            match report.as_mut() {
                Some(r) => {
                    let _ = wharf_runtime::send_with_fd(
                        r.as_fd(),
                        format!("err {message}\n").as_bytes(),
                        None,
                    );
                }
                None => eprintln!("{message}"),
            }
            return ExitCode::from(crate::start_failure_code(&message));
        }
    };
    if let Some(r) = report.as_mut() {
        let _ = wharf_runtime::send_with_fd(
            r.as_fd(),
            format!("ok {pid}\n").as_bytes(),
            master.as_ref().map(|m| m.as_fd()),
        );
    }
    drop(master);
    drop(report);
    // The engine sees EOF on the process's output only when the process closes it, not when
    // this shim exits: give our copies up now.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd);
        }
    }
    ExitCode::from(wait_for(pid) as u8)
}

fn start(
    args: &ExecArgs,
    console_path: &std::path::Path,
) -> Result<(i32, Option<std::os::fd::OwnedFd>), String> {
    // The process is reparented to us when libcontainer's intermediate process exits.
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("subreaper: {e}"))?;
    let console = if args.tty {
        let _ = std::fs::remove_file(console_path);
        Some(crate::run::bind(console_path)?)
    } else {
        None
    };
    let stdio = if args.tty {
        Stdio::Console(console_path.to_path_buf())
    } else {
        // The process inherits this shim's 0, 1 and 2: the engine's pipes.
        Stdio::Fds {
            stdin: None,
            stdout: None,
            stderr: None,
        }
    };
    wharf_runtime::set_sigpipe_default(true).map_err(|e| format!("signal setup: {e}"))?;
    let pid = wharf_runtime::exec(ExecOptions {
        id: &args.id,
        state_root: &args.state,
        process: &args.process,
        stdio,
    })
    .map_err(|e| e.to_string())?;
    let master = match console {
        Some(listener) => {
            let (conn, _) = listener
                .accept()
                .map_err(|e| format!("console socket: {e}"))?;
            let mut buf = [0u8; 64];
            let (_, fd) = wharf_runtime::recv_with_fd(conn.as_fd(), &mut buf)
                .map_err(|e| format!("console socket: {e}"))?;
            Some(fd.ok_or("the runtime sent no pty master")?)
        }
        None => None,
    };
    Ok((pid, master))
}

/// Reaps children until `pid` exits; returns its Docker exit code.
fn wait_for(pid: i32) -> i32 {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(status @ (WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, _, _)))
                if p.as_raw() == pid =>
            {
                return crate::exit_code(status).unwrap_or(255);
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return 255,
        }
    }
}
