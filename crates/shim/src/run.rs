//! `wharf shim run`: detach from the engine, create the container, report, then serve it.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::fcntl::OFlag;
use wharf_runtime::{Container, Fork, InitOptions, Stdio};

use crate::RunArgs;
use crate::serve::{Output, Shim};

/// Writes `data` to `path` through a temporary file and a rename, so readers see all or nothing.
/// No fsync: these files live in the run directory, which a reboot empties anyway, and a
/// crashed process leaves its writes in the page cache.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    std::fs::rename(&tmp, path)
}

fn report(out: &mut File, line: &str) {
    // The engine may have gone away; the container still runs and is found again by its files.
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

pub(crate) fn run(mut args: RunArgs) -> ExitCode {
    // Paths stay valid after the chdir("/") below.
    for p in [
        &mut args.bundle,
        &mut args.state,
        &mut args.dir,
        &mut args.log,
    ] {
        if let Ok(abs) = std::path::absolute(&*p) {
            *p = abs;
        }
    }
    // The engine reads one line from our stdout; keep it on its own descriptor so 0-2 can
    // become /dev/null in the long-lived shim.
    let mut out = match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => File::from(fd),
        Err(e) => {
            eprintln!("wharf shim: duplicating stdout: {e}");
            return ExitCode::from(125);
        }
    };
    // The shim must outlive the engine and its session. The engine passes --session: the
    // shim (not a process group leader, so setsid works) leads a new session in place and
    // stays the engine's child, saving two forks on every start. Otherwise it double-forks
    // into a grandchild nobody waits for.
    if args.session && nix::unistd::setsid().is_ok() {
        return ExitCode::from(u8::try_from(serve_container(&args, out)).unwrap_or(1));
    }
    match wharf_runtime::fork() {
        Err(e) => {
            report(&mut out, &format!("err forking the shim: {e}\n"));
            return ExitCode::from(125);
        }
        Ok(Fork::Parent(child)) => {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
            return ExitCode::SUCCESS;
        }
        Ok(Fork::Child) => {}
    }
    let _ = nix::unistd::setsid();
    match wharf_runtime::fork() {
        Err(e) => {
            report(&mut out, &format!("err forking the shim: {e}\n"));
            std::process::exit(125);
        }
        Ok(Fork::Parent(_)) => std::process::exit(0),
        Ok(Fork::Child) => {}
    }
    std::process::exit(serve_container(&args, out))
}

/// Creates the container, reports on `out`, and serves it until it has exited; returns the
/// shim's exit code.
fn serve_container(args: &RunArgs, mut out: File) -> i32 {
    if let Err(e) = detach_stdio() {
        report(&mut out, &format!("err setting up the shim: {e}\n"));
        return 125;
    }
    match start(args) {
        Ok(shim) => {
            wharf_runtime::trim_heap();
            report(&mut out, &format!("ok {}\n", shim.pid()));
            drop(out);
            shim.serve()
        }
        Err(message) => {
            report(&mut out, &format!("err {}\n", message.replace('\n', " ")));
            1
        }
    }
}

/// Points 0, 1 and 2 at /dev/null and leaves the engine's working directory.
fn detach_stdio() -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in 0..3 {
        nix::unistd::dup2(null.as_raw_fd(), fd)?;
    }
    nix::sys::prctl::set_child_subreaper(true)?;
    std::env::set_current_dir("/")?;
    Ok(())
}

/// The paths of the shim's own files in `<dir>`.
pub(crate) struct Files {
    pub socket: PathBuf,
    pub console: PathBuf,
    pub pid: PathBuf,
    pub exit: PathBuf,
}

impl Files {
    fn new(dir: &Path) -> Files {
        Files {
            socket: dir.join("shim.sock"),
            console: dir.join("console.sock"),
            pid: dir.join("pid"),
            exit: dir.join("exit"),
        }
    }
}

/// Binds a unix socket at `path`, however long the path is.
pub(crate) fn bind(path: &Path) -> Result<UnixListener, String> {
    wharf_runtime::socket::SocketPath::new(path)
        .and_then(|p| UnixListener::bind(p.path()))
        .map_err(|e| format!("binding {}: {e}", path.display()))
}

fn nonblocking(fd: &impl AsFd) -> std::io::Result<()> {
    let raw = fd.as_fd().as_raw_fd();
    let flags = OFlag::from_bits_truncate(nix::fcntl::fcntl(raw, nix::fcntl::FcntlArg::F_GETFL)?);
    nix::fcntl::fcntl(
        raw,
        nix::fcntl::FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK),
    )?;
    Ok(())
}

/// Creates the container (its process waits for the `start` command) and everything the shim
/// serves. On error nothing is left behind and the message is the runtime's.
fn start(args: &RunArgs) -> Result<Shim, String> {
    let files = Files::new(&args.dir);
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("creating {}: {e}", args.dir.display()))?;
    let _ = std::fs::remove_file(&files.socket);
    let _ = std::fs::remove_file(&files.console);
    let _ = std::fs::remove_file(&files.exit);
    let listener = bind(&files.socket)?;
    let cleanup = |files: &Files| {
        let _ = std::fs::remove_file(&files.socket);
        let _ = std::fs::remove_file(&files.console);
    };
    match create(args, &files, listener) {
        Ok(shim) => Ok(shim),
        Err(e) => {
            cleanup(&files);
            Err(e)
        }
    }
}

fn create(args: &RunArgs, files: &Files, listener: UnixListener) -> Result<Shim, String> {
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("control socket: {e}"))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log)
        .map_err(|e| format!("opening the log {}: {e}", args.log.display()))?;

    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("creating a pipe: {e}"));
    let (stdio, output, stdin_w, console) = if args.tty {
        let console = bind(&files.console)?;
        (
            Stdio::Console(files.console.clone()),
            None,
            None,
            Some(console),
        )
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (in_r, in_w) = if args.stdin {
            let (r, w) = pipe()?;
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        (
            Stdio::Fds {
                stdin: in_r,
                stdout: Some(out_w),
                stderr: Some(err_w),
            },
            Some((out_r, err_r)),
            in_w,
            None,
        )
    };

    // libcontainer writes the container's oom_score_adj into its caller; the shim puts its own
    // back afterwards so it does not become the host's favourite OOM victim.
    let own_oom = std::fs::read_to_string("/proc/self/oom_score_adj").ok();
    // An ignored SIGPIPE would be inherited by the container's process across execve.
    wharf_runtime::set_sigpipe_default(true).map_err(|e| format!("signal setup: {e}"))?;
    let created = Container::create(InitOptions {
        id: &args.id,
        bundle: &args.bundle,
        state_root: &args.state,
        stdio,
    });
    let _ = wharf_runtime::set_sigpipe_default(false);
    if let Some(v) = own_oom {
        let _ = std::fs::write("/proc/self/oom_score_adj", v.trim());
    }
    let mut container = created.map_err(|e| e.to_string())?;

    let finish_setup =
        |container: &mut Container| -> Result<(Output, Option<OwnedFd>, i32), String> {
            let pid = container.pid().ok_or("the runtime reported no pid")?;
            container.loopback_up().map_err(|e| e.to_string())?;
            let output = match (output, console) {
                (Some((out_r, err_r)), _) => {
                    nonblocking(&out_r)
                        .and_then(|_| nonblocking(&err_r))
                        .map_err(|e| format!("pipes: {e}"))?;
                    Output::Pipes {
                        stdout: Some(out_r),
                        stderr: Some(err_r),
                    }
                }
                (None, Some(console)) => {
                    // libcontainer connected and sent the master during create; both are queued.
                    let (conn, _) = console
                        .accept()
                        .map_err(|e| format!("console socket: {e}"))?;
                    let mut buf = [0u8; 64];
                    let (_, master) = wharf_runtime::recv_with_fd(conn.as_fd(), &mut buf)
                        .map_err(|e| format!("console socket: {e}"))?;
                    let master = master.ok_or("the runtime sent no pty master")?;
                    nonblocking(&master).map_err(|e| format!("pty: {e}"))?;
                    let _ = std::fs::remove_file(&files.console);
                    Output::Pty {
                        master: Some(master),
                    }
                }
                (None, None) => return Err("no container output".into()),
            };
            if let Some(w) = &stdin_w {
                nonblocking(w).map_err(|e| format!("stdin pipe: {e}"))?;
            }
            write_atomic(&files.pid, pid.to_string().as_bytes())
                .map_err(|e| format!("writing the pid file: {e}"))?;
            Ok((output, stdin_w, pid))
        };
    match finish_setup(&mut container) {
        Ok((output, stdin_w, pid)) => Ok(Shim::new(
            args, files, container, listener, log, output, stdin_w, pid,
        )),
        Err(e) => {
            let _ = container.delete(true);
            Err(e)
        }
    }
}
