//! The engine side of the shim contract (docs/ARCHITECTURE.md, "The shim contract"): spawn a
//! `wharf shim run`, release its container, attach, resize, wait, and run `wharf shim exec`.
//! Everything here is async (tokio); the shims themselves never are.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll, ready};

use nix::sys::signal::Signal;
use oci_spec::runtime::Process;
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use wharf_runtime::socket::SocketPath;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("starting the shim")]
    Spawn(#[source] io::Error),
    /// The runtime could not start the process; the text is the runtime's own.
    #[error("{0}")]
    Start(String),
    #[error("the shim exited without reporting ({0})")]
    NoReport(String),
    #[error("the shim of {0} is not running")]
    Gone(PathBuf),
    #[error("shim socket {path}")]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the shim answered {0:?}")]
    Protocol(String),
    #[error("exec files in {path}")]
    Files {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("signalling process {pid}")]
    Kill {
        pid: u32,
        #[source]
        source: nix::errno::Errno,
    },
}

/// How a container ended, as the shim records it in `<dir>/exit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub exit_code: i32,
    pub oom_killed: bool,
    pub finished_at: String,
}

/// Which streams an attach carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttachStreams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// What `wharf shim run` needs.
pub struct ShimSpawn<'a> {
    pub id: &'a str,
    /// `<root>/containers/<id>`, holding `config.json`.
    pub bundle: &'a Path,
    /// libcontainer's state root, `<run>/runtime`.
    pub state_root: &'a Path,
    /// `<run>/containers/<id>`: the shim's socket, pid and exit record.
    pub dir: &'a Path,
    pub log: &'a Path,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
}

static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Runs shims from `path` instead of this process's own executable (for an engine embedded in
/// a test binary). The first call wins.
pub fn use_binary(path: PathBuf) {
    let _ = BINARY.set(path);
}

fn wharf_exe() -> Result<PathBuf, ShimError> {
    match BINARY.get() {
        Some(p) => Ok(p.clone()),
        None => std::env::current_exe().map_err(ShimError::Spawn),
    }
}

/// The name of the standalone shim binary installed next to `wharf`.
pub const SHIM_BINARY: &str = "wharf-shim";

/// A command running the shim: the small standalone `wharf-shim` next to the wharf binary
/// when it is there (it starts faster and stays smaller for the container's whole life),
/// else `wharf shim`.
fn shim_command() -> Result<Command, ShimError> {
    let wharf = wharf_exe()?;
    let standalone = wharf.with_file_name(SHIM_BINARY);
    if standalone.is_file() {
        return Ok(Command::new(standalone));
    }
    let mut cmd = Command::new(wharf);
    cmd.arg("shim");
    Ok(cmd)
}

/// Warms the kernel's cgroup migration lock on a spare thread, so that the runtime's move of
/// a process about to start into its cgroup does not wait out an RCU grace period (see
/// `wharf_runtime::cgroup::warm_migration`). Only an optimisation: failures are ignored.
pub(crate) fn warm_cgroup_migration() {
    tokio::task::spawn_blocking(|| {
        let _ = wharf_runtime::cgroup::warm_migration();
    });
}

/// [`warm_cgroup_migration`] for a container about to be created: not needed where the
/// runtime's direct path makes the init, which moves itself without the lock. The warm-up's
/// own write holds the lock for a moment, and every fork and exit on the host waits then.
pub(crate) fn warm_cgroup_migration_for_create() {
    static DIRECT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*DIRECT.get_or_init(wharf_runtime::creates_directly) {
        warm_cgroup_migration();
    }
}

/// A shim started ahead of need (`wharf shim spare`): it waits on its stdin for the
/// arguments of `run`, so a start skips the shim's exec and dynamic loading.
struct Spare {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

static SPARE: std::sync::Mutex<Option<Spare>> = std::sync::Mutex::new(None);

fn start_spare() -> Result<Spare, ShimError> {
    let mut cmd = shim_command()?;
    cmd.arg("spare")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().map_err(ShimError::Spawn)?;
    match (child.stdin.take(), child.stdout.take()) {
        (Some(stdin), Some(stdout)) => Ok(Spare {
            child,
            stdin,
            stdout,
        }),
        _ => Err(ShimError::Spawn(io::Error::other(
            "the spare shim has no pipes",
        ))),
    }
}

/// Starts the next spare shim on a blocking thread (a spawn waits for the exec), unless one
/// is waiting already. Only an optimisation: failures are ignored.
fn refill_spare() {
    let already = SPARE.lock().map(|s| s.is_some()).unwrap_or(true);
    if already {
        return;
    }
    tokio::task::spawn_blocking(|| {
        if let Ok(spare) = start_spare()
            && let Ok(mut slot) = SPARE.lock()
            && slot.is_none()
        {
            *slot = Some(spare);
        }
    });
}

/// Hands the arguments to the waiting spare shim, if there is one that is still alive.
async fn use_spare(args: &[std::ffi::OsString]) -> Option<(Child, ChildStdout)> {
    let mut spare = SPARE.lock().ok()?.take()?;
    if !matches!(spare.child.try_wait(), Ok(None)) {
        return None;
    }
    let mut job = Vec::new();
    for a in args {
        job.extend_from_slice(a.as_encoded_bytes());
        job.push(0);
    }
    // The shim reads to EOF: dropping stdin after the write ends the job.
    spare.stdin.write_all(&job).await.ok()?;
    drop(spare.stdin);
    Some((spare.child, spare.stdout))
}

/// Starts a shim; returns the container's pid once its process exists (it does not run the
/// workload until [`release`]). An error carries the runtime's message.
pub async fn spawn(s: &ShimSpawn<'_>) -> Result<u32, ShimError> {
    // --session: the shim stays our child (reaped below) instead of double-forking.
    let mut args: Vec<std::ffi::OsString> = ["run", "--session", "--id", s.id]
        .iter()
        .map(Into::into)
        .collect();
    for (flag, path) in [
        ("--bundle", s.bundle),
        ("--state", s.state_root),
        ("--dir", s.dir),
        ("--log", s.log),
    ] {
        args.push(flag.into());
        args.push(path.as_os_str().to_owned());
    }
    for (on, flag) in [
        (s.tty, "--tty"),
        (s.stdin, "--stdin"),
        (s.stdin_once, "--stdin-once"),
    ] {
        if on {
            args.push(flag.into());
        }
    }
    let (mut child, out) = match use_spare(&args).await {
        Some(ready) => ready,
        None => {
            let mut cmd = shim_command()?;
            cmd.args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            let mut child = cmd.spawn().map_err(ShimError::Spawn)?;
            let out = child
                .stdout
                .take()
                .ok_or_else(|| ShimError::Spawn(io::Error::other("the shim has no stdout")))?;
            (child, out)
        }
    };
    let mut line = String::new();
    // One line only: the container's process holds the pipe until it execs.
    BufReader::new(out)
        .read_line(&mut line)
        .await
        .map_err(ShimError::Spawn)?;
    // The next container's shim loads while this one starts.
    refill_spare();
    let line = line.trim_end();
    let report = if let Some(pid) = line.strip_prefix("ok ") {
        pid.trim()
            .parse()
            .map_err(|_| ShimError::Protocol(line.to_string()))
    } else if let Some(message) = line.strip_prefix("err ") {
        Err(ShimError::Start(message.to_string()))
    } else {
        let status = child.wait().await.map_err(ShimError::Spawn)?;
        return Err(ShimError::NoReport(status.to_string()));
    };
    // The shim lives as long as its container; reap it whenever it ends. The monitor learns
    // of the exit through the shim's socket, which also works for shims of an earlier daemon.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    report
}

async fn connect(dir: &Path) -> Result<UnixStream, ShimError> {
    let path = dir.join("shim.sock");
    let short = SocketPath::new(&path).map_err(|source| ShimError::Socket {
        path: path.clone(),
        source,
    })?;
    UnixStream::connect(short.path())
        .await
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                ShimError::Gone(dir.to_path_buf())
            }
            _ => ShimError::Socket { path, source },
        })
}

/// Sends one command and reads the one-line answer.
async fn command(dir: &Path, cmd: &str) -> Result<String, ShimError> {
    let mut s = connect(dir).await?;
    let sock_err = |source| ShimError::Socket {
        path: dir.join("shim.sock"),
        source,
    };
    s.write_all(cmd.as_bytes()).await.map_err(sock_err)?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .await
        .map_err(sock_err)?;
    Ok(line)
}

fn expect_ok(line: String) -> Result<(), ShimError> {
    match line.trim_end() {
        "ok" => Ok(()),
        l => match l.strip_prefix("err ") {
            Some(m) => Err(ShimError::Start(m.to_string())),
            None => Err(ShimError::Protocol(l.to_string())),
        },
    }
}

/// Lets the container's process run (the shim's `start`). Attach first to miss no output.
pub async fn release(dir: &Path) -> Result<(), ShimError> {
    expect_ok(command(dir, "start\n").await?)
}

/// Attaches to the container's stdio. Without a tty the output comes in Docker's multiplexed
/// frames; the shim closes the stream when the output ends.
pub async fn attach(dir: &Path, streams: AttachStreams) -> Result<UnixStream, ShimError> {
    let mut s = connect(dir).await?;
    let b = |v: bool| if v { '1' } else { '0' };
    let header = format!(
        "attach {} {} {}\n",
        b(streams.stdin),
        b(streams.stdout),
        b(streams.stderr)
    );
    s.write_all(header.as_bytes())
        .await
        .map_err(|source| ShimError::Socket {
            path: dir.join("shim.sock"),
            source,
        })?;
    Ok(s)
}

/// Resizes the container's tty.
pub async fn resize(dir: &Path, rows: u16, cols: u16) -> Result<(), ShimError> {
    expect_ok(command(dir, &format!("resize {rows} {cols}\n")).await?)
}

/// Waits for the container to exit. When the shim is already gone, the exit record it left
/// is read; `Gone` when there is none (the shim died without recording).
pub async fn wait(dir: &Path) -> Result<ExitRecord, ShimError> {
    loop {
        // A shim that is finishing may close or reset the connection before answering; its
        // exit record is on disk by then.
        let line = command(dir, "wait\n").await.unwrap_or_default();
        if let Ok(r) = serde_json::from_str::<ExitRecord>(line.trim_end()) {
            return Ok(r);
        }
        if let Some(r) = read_exit(dir) {
            return Ok(r);
        }
        if !dir.join("shim.sock").exists() {
            return Err(ShimError::Gone(dir.to_path_buf()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The exit record the shim left in `<dir>/exit`, if any.
pub fn read_exit(dir: &Path) -> Option<ExitRecord> {
    let text = std::fs::read_to_string(dir.join("exit")).ok()?;
    serde_json::from_str(text.trim_end()).ok()
}

/// Whether a shim serves `dir` (its control socket answers).
pub async fn is_alive(dir: &Path) -> bool {
    connect(dir).await.is_ok()
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub fn kill(pid: u32, signal: Signal) -> Result<(), ShimError> {
    let raw = i32::try_from(pid).map_err(|_| ShimError::Kill {
        pid,
        source: nix::errno::Errno::EINVAL,
    })?;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(source) => Err(ShimError::Kill { pid, source }),
    }
}

/// What `wharf shim exec` needs.
pub struct ExecSpawn<'a> {
    pub id: &'a str,
    pub state_root: &'a Path,
    /// Where the process file and the report socket live while the exec starts
    /// (`<run>/containers/<id>`).
    pub dir: &'a Path,
    pub exec_id: &'a str,
    /// From [`super::spec::exec_process`].
    pub process: &'a Process,
    pub tty: bool,
    /// Whether the exec gets a stdin (without a tty: a pipe; otherwise /dev/null).
    pub stdin: bool,
}

/// The stdio of a running exec.
pub enum ExecIo {
    Pipes {
        stdin: Option<ChildStdin>,
        stdout: ChildStdout,
        stderr: ChildStderr,
    },
    /// The pty master: read the output, write the input, resize.
    Pty(PtyMaster),
}

/// A started exec.
pub struct ExecHandle {
    /// The process, in the host's pid namespace.
    pub pid: u32,
    pub io: ExecIo,
    /// Resolves to the exit code (128 + signal for a signal death).
    pub exit: Pin<Box<dyn Future<Output = Result<i32, ShimError>> + Send>>,
}

/// Starts one process in a running container. A start failure is `ShimError::Start` with the
/// runtime's words ("executable file not found in $PATH", "permission denied").
pub async fn exec(s: &ExecSpawn<'_>) -> Result<ExecHandle, ShimError> {
    let short_id: String = s.exec_id.chars().take(12).collect();
    let process_file = s.dir.join(format!("exec-{short_id}.json"));
    let report_path = s.dir.join(format!("exec-{short_id}.sock"));
    let files_err = |source| ShimError::Files {
        path: s.dir.to_path_buf(),
        source,
    };
    let json = serde_json::to_vec(s.process).map_err(|e| files_err(io::Error::other(e)))?;
    tokio::fs::write(&process_file, json)
        .await
        .map_err(files_err)?;
    let _ = tokio::fs::remove_file(&report_path).await;
    let result = exec_inner(s, &process_file, &report_path).await;
    let _ = tokio::fs::remove_file(&process_file).await;
    let _ = tokio::fs::remove_file(&report_path).await;
    result
}

async fn exec_inner(
    s: &ExecSpawn<'_>,
    process_file: &Path,
    report_path: &Path,
) -> Result<ExecHandle, ShimError> {
    let sock_err = |source| ShimError::Socket {
        path: report_path.to_path_buf(),
        source,
    };
    let short = SocketPath::new(report_path).map_err(sock_err)?;
    let listener = UnixListener::bind(short.path()).map_err(sock_err)?;
    let mut cmd = shim_command()?;
    cmd.args(["exec", "--id", s.id])
        .arg("--state")
        .arg(s.state_root)
        .arg("--process")
        .arg(process_file)
        .arg("--report")
        .arg(report_path);
    if s.tty {
        cmd.arg("--tty");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    } else {
        cmd.stdin(if s.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(ShimError::Spawn)?;
    // Child::wait closes the child's stdin; take the pipes before waiting on it below.
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let conn = tokio::select! {
        accepted = listener.accept() => accepted.map_err(sock_err)?.0,
        status = child.wait() => {
            let status = status.map_err(ShimError::Spawn)?;
            return Err(ShimError::NoReport(status.to_string()));
        }
    };
    let mut buf = [0u8; 4096];
    let (n, master) = loop {
        conn.readable().await.map_err(sock_err)?;
        match conn.try_io(tokio::io::Interest::READABLE, || {
            wharf_runtime::recv_with_fd(conn.as_fd(), &mut buf)
        }) {
            Ok(v) => break v,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(sock_err(e)),
        }
    };
    let mut line = String::from_utf8_lossy(&buf[..n]).into_owned();
    if !line.ends_with('\n') && n > 0 {
        // A long error message may come in more than one read.
        let mut rest = String::new();
        let mut conn = conn;
        let _ = conn.read_to_string(&mut rest).await;
        line.push_str(&rest);
    }
    let line = line.trim_end();
    if let Some(message) = line.strip_prefix("err ") {
        let _ = child.wait().await;
        return Err(ShimError::Start(message.to_string()));
    }
    let pid: u32 = line
        .strip_prefix("ok ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| ShimError::Protocol(line.to_string()))?;
    let io = if s.tty {
        let master =
            master.ok_or_else(|| ShimError::Protocol("no pty master with the report".into()))?;
        ExecIo::Pty(PtyMaster::new(master).map_err(sock_err)?)
    } else {
        match (stdout, stderr) {
            (Some(stdout), Some(stderr)) => ExecIo::Pipes {
                stdin,
                stdout,
                stderr,
            },
            _ => return Err(ShimError::Protocol("exec shim without pipes".into())),
        }
    };
    let exit = Box::pin(wait_child(child));
    Ok(ExecHandle { pid, io, exit })
}

async fn wait_child(mut child: Child) -> Result<i32, ShimError> {
    use std::os::unix::process::ExitStatusExt;
    let status = child.wait().await.map_err(ShimError::Spawn)?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// A pty master as an async stream. Reads end (EOF) when the last process holding the slave
/// has closed it (the kernel reports EIO then).
pub struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

impl PtyMaster {
    pub fn new(fd: OwnedFd) -> io::Result<PtyMaster> {
        let raw = fd.as_raw_fd();
        let flags = nix::fcntl::OFlag::from_bits_truncate(nix::fcntl::fcntl(
            raw,
            nix::fcntl::FcntlArg::F_GETFL,
        )?);
        nix::fcntl::fcntl(
            raw,
            nix::fcntl::FcntlArg::F_SETFL(flags | nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        // `new` is deprecated because an arbitrary `AsRawFd` may change or close its fd; an
        // `OwnedFd` keeps the same open descriptor until dropped, which is what `register`
        // demands (the unsafe variant, not allowed outside the runtime's sys module).
        #[allow(deprecated)]
        let fd = AsyncFd::new(fd)?;
        Ok(PtyMaster { fd })
    }

    /// Sets the terminal's window size.
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        wharf_runtime::set_winsize(self.fd.get_ref().as_fd(), rows, cols)
    }
}

impl AsyncRead for PtyMaster {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.into_ref().get_ref().poll_read_shared(cx, buf)
    }
}

impl PtyMaster {
    /// Reads through a shared reference, so one master can be read, written and resized by
    /// different tasks.
    pub fn poll_read_shared(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref().as_raw_fd(), unfilled).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc_eio()) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyMaster {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.into_ref().get_ref().poll_write_shared(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl PtyMaster {
    /// Writes through a shared reference (see [`PtyMaster::poll_read_shared`]).
    pub fn poll_write_shared(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(io::Error::from))
            {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }
}

fn libc_eio() -> i32 {
    nix::errno::Errno::EIO as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_shim_reads_the_exit_record() {
        let dir = std::env::temp_dir().join(format!("wharf-shimclient-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!is_alive(&dir).await);
        assert!(matches!(wait(&dir).await, Err(ShimError::Gone(_))));
        std::fs::write(
            dir.join("exit"),
            "{\"exit_code\":3,\"oom_killed\":true,\"finished_at\":\"t\"}\n",
        )
        .unwrap();
        let r = wait(&dir).await.unwrap();
        assert_eq!(
            r,
            ExitRecord {
                exit_code: 3,
                oom_killed: true,
                finished_at: "t".into()
            }
        );
        assert_eq!(read_exit(&dir), Some(r));
        assert!(matches!(release(&dir).await, Err(ShimError::Gone(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn pty_master_reads_until_the_slave_closes() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let mut master = PtyMaster::new(pty.master).unwrap();
        master.resize(10, 20).unwrap();
        let mut slave = std::fs::File::from(pty.slave);
        std::io::Write::write_all(&mut slave, b"hello\n").unwrap();
        drop(slave);
        let mut out = Vec::new();
        master.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"hello\r\n");
    }

    #[test]
    fn kill_of_a_gone_process_is_fine() {
        // pid_max is far below this; the kernel says ESRCH.
        assert!(kill(4_000_000, Signal::SIGTERM).is_ok());
    }
}
