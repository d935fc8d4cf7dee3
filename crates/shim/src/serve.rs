//! The shim's event loop: container output to the log and the attach clients, client input
//! to the container, control commands, reaping, and the exit record.
//!
//! Everything is non-blocking and driven by one poll(2). Output is read only while every
//! attach client has less than [`CLIENT_BACKLOG`] bytes queued, so a slow client slows the
//! container down instead of growing the shim's memory.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::Serialize;
use wharf_runtime::Container;
use wharf_runtime::cgroup::Cgroup;

use crate::RunArgs;
use crate::log::{JsonLog, Stream, now};
use crate::run::{Files, write_atomic};

const CLIENT_BACKLOG: usize = 1 << 20;
/// How long the shim must have been idle before it gives memory back (see [`Shim::trim`]).
const IDLE_TRIM_AFTER: Duration = Duration::from_millis(250);
const HEADER_MAX: usize = 128;
/// How long the final flush to an attach client may block before the client is dropped.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the container's output comes from.
pub(crate) enum Output {
    Pipes {
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    },
    /// The pty master: output, input and window size. `None` once the output has ended.
    Pty { master: Option<OwnedFd> },
}

#[derive(Serialize)]
struct ExitRecord<'a> {
    exit_code: i32,
    oom_killed: bool,
    finished_at: &'a str,
}

#[derive(PartialEq, Eq)]
enum Phase {
    /// The first line (the command) is still being read.
    Header,
    Attached,
}

struct Client {
    stream: UnixStream,
    phase: Phase,
    header: Vec<u8>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    /// The client half-closed its side.
    read_done: bool,
    out: Vec<u8>,
}

#[derive(Clone, Copy)]
enum Tag {
    Signal,
    Listener,
    Out(Stream),
    Stdin,
    Client(usize),
}

pub(crate) struct Shim {
    container: Container,
    cgroup: Option<Cgroup>,
    pid: i32,
    /// The container's init leads a pid namespace of its own: when it ends, the kernel has
    /// killed and waited for every other process in it.
    own_pid_ns: bool,
    tty: bool,
    stdin_once: bool,
    started: bool,
    listener: UnixListener,
    sigfd: Option<SignalFd>,
    output: Output,
    /// The write end of the container's stdin pipe (no tty).
    stdin_w: Option<OwnedFd>,
    /// Whether client input still goes to the container.
    stdin_open: bool,
    /// Close the container's stdin once `stdin_buf` is written (stdin-once half-close).
    stdin_close: bool,
    stdin_buf: Vec<u8>,
    log: JsonLog,
    clients: Vec<Client>,
    waiters: Vec<UnixStream>,
    status: Option<i32>,
    /// Something happened since the last trim.
    trim_due: bool,
    socket: PathBuf,
    pid_file: PathBuf,
    exit_file: PathBuf,
}

impl Shim {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        args: &RunArgs,
        files: &Files,
        container: Container,
        listener: UnixListener,
        log: File,
        output: Output,
        stdin_w: Option<OwnedFd>,
        pid: i32,
    ) -> Shim {
        let cgroup = container
            .cgroup_path()
            .ok()
            .map(|path| Cgroup::system(path).listed());
        let ns = |p: String| std::fs::read_link(p).ok();
        let own_pid_ns = match (
            ns(format!("/proc/{pid}/ns/pid")),
            ns("/proc/self/ns/pid".into()),
        ) {
            (Some(theirs), Some(ours)) => theirs != ours,
            _ => false,
        };
        Shim {
            container,
            cgroup,
            pid,
            own_pid_ns,
            tty: args.tty,
            stdin_once: args.stdin_once,
            started: false,
            listener,
            sigfd: None,
            stdin_open: args.stdin,
            stdin_w,
            stdin_close: false,
            stdin_buf: Vec::new(),
            output,
            log: JsonLog::new(Some(log)),
            clients: Vec::new(),
            waiters: Vec::new(),
            status: None,
            trim_due: true,
            socket: files.socket.clone(),
            pid_file: files.pid.clone(),
            exit_file: files.exit.clone(),
        }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Runs until the container has exited and its output is drained; returns the shim's
    /// own exit code.
    pub(crate) fn serve(mut self) -> i32 {
        // SIGCHLD is blocked only now: the container's process was created with the default
        // mask, and a blocked mask would be inherited across execve.
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        if sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).is_ok() {
            self.sigfd =
                SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).ok();
        }
        if self.sigfd.is_none() {
            // Without a signalfd the shim cannot notice the exit; give up on the container
            // rather than hang.
            let _ = self.container.kill(Signal::SIGKILL, true);
        }
        self.reap();
        while !self.finished() {
            let ready = self.wait_ready();
            match ready {
                None => self.trim(),
                Some(ready) => {
                    for (tag, revents) in ready {
                        self.handle(tag, revents);
                    }
                }
            }
        }
        self.finish();
        0
    }

    fn finished(&self) -> bool {
        let output_done = match &self.output {
            Output::Pipes { stdout, stderr } => stdout.is_none() && stderr.is_none(),
            Output::Pty { master } => master.is_none(),
        };
        self.status.is_some() && (output_done || self.sigfd.is_none())
    }

    fn output_fds(&self) -> Vec<(Stream, BorrowedFd<'_>)> {
        match &self.output {
            Output::Pipes { stdout, stderr } => {
                let mut v = Vec::with_capacity(2);
                if let Some(fd) = stdout {
                    v.push((Stream::Stdout, fd.as_fd()));
                }
                if let Some(fd) = stderr {
                    v.push((Stream::Stderr, fd.as_fd()));
                }
                v
            }
            Output::Pty { master } => master.iter().map(|m| (Stream::Stdout, m.as_fd())).collect(),
        }
    }

    fn stdin_fd(&self) -> Option<BorrowedFd<'_>> {
        if !self.stdin_open {
            return None;
        }
        match &self.output {
            Output::Pty { master } => master.as_ref().map(|m| m.as_fd()),
            Output::Pipes { .. } => self.stdin_w.as_ref().map(|w| w.as_fd()),
        }
    }

    /// An idle shim gives back its free heap and the file pages it touched while it worked
    /// (libcontainer's create, the first commands): a shim lives as long as its container.
    fn trim(&mut self) {
        wharf_runtime::trim_heap();
        let _ = wharf_runtime::release_clean_file_pages();
        self.trim_due = false;
    }

    /// Blocks in poll(2); returns what became ready, or `None` when the shim has been idle
    /// for [`IDLE_TRIM_AFTER`] with a trim due.
    fn wait_ready(&mut self) -> Option<Vec<(Tag, PollFlags)>> {
        let mut tags = Vec::with_capacity(8 + self.clients.len());
        let mut fds = Vec::with_capacity(8 + self.clients.len());
        if let Some(s) = &self.sigfd {
            tags.push(Tag::Signal);
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        tags.push(Tag::Listener);
        fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
        let backlogged = self.clients.iter().any(|c| c.out.len() >= CLIENT_BACKLOG);
        if !backlogged {
            for (stream, fd) in self.output_fds() {
                tags.push(Tag::Out(stream));
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
        }
        if !self.stdin_buf.is_empty()
            && let Some(fd) = self.stdin_fd()
        {
            tags.push(Tag::Stdin);
            fds.push(PollFd::new(fd, PollFlags::POLLOUT));
        }
        let take_input = self.stdin_buf.is_empty();
        for (i, c) in self.clients.iter().enumerate() {
            let mut flags = PollFlags::empty();
            if !c.read_done && (c.phase == Phase::Header || take_input) {
                flags |= PollFlags::POLLIN;
            }
            if !c.out.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            tags.push(Tag::Client(i));
            fds.push(PollFd::new(c.stream.as_fd(), flags));
        }
        let timeout = if self.trim_due {
            PollTimeout::try_from(IDLE_TRIM_AFTER).unwrap_or(PollTimeout::NONE)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(0) if self.trim_due => return None,
            Ok(_) => {}
            Err(_) => return Some(Vec::new()),
        }
        let ready: Vec<(Tag, PollFlags)> = tags
            .into_iter()
            .zip(fds.iter())
            .filter_map(|(t, f)| f.revents().filter(|r| !r.is_empty()).map(|r| (t, r)))
            .collect();
        drop(fds);
        if !ready.is_empty() {
            self.trim_due = true;
        }
        Some(ready)
    }

    fn handle(&mut self, tag: Tag, revents: PollFlags) {
        match tag {
            Tag::Signal => {
                if let Some(s) = &self.sigfd {
                    while let Ok(Some(_)) = s.read_signal() {}
                }
                self.reap();
            }
            Tag::Listener => self.accept(),
            Tag::Out(stream) => self.read_output(stream),
            Tag::Stdin => self.write_stdin(),
            Tag::Client(i) => {
                // Indices shift when a client is dropped; handle each at most once, by identity.
                if i < self.clients.len() {
                    if revents.intersects(PollFlags::POLLOUT | PollFlags::POLLERR) {
                        self.flush_client(i);
                    }
                    if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP)
                        && i < self.clients.len()
                    {
                        self.read_client(i);
                    }
                }
            }
        }
        self.clients.retain(|c| {
            c.phase != Phase::Attached || c.stdout || c.stderr || c.stdin || !c.read_done
        });
    }

    /// Reaps every child (the shim is a subreaper); the container's init gives the status.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    if status.pid() == Some(Pid::from_raw(self.pid))
                        && let Some(code) = crate::exit_code(status)
                    {
                        self.status = Some(code);
                        // The container ends with its init; this catches processes that would
                        // otherwise hold the output pipes open. Directly through the cgroup:
                        // libcontainer's kill rebuilds a cgroup manager from mountinfo and
                        // freezes around the kill, a good part of a short run's teardown. Not
                        // needed when the init led its own pid namespace (the kernel did it).
                        match &self.cgroup {
                            _ if self.own_pid_ns => {}
                            Some(cg) => cg.kill_all(),
                            None => {
                                let _ = self.container.kill(Signal::SIGKILL, true);
                            }
                        }
                    }
                }
            }
        }
    }

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if stream.set_nonblocking(true).is_ok() {
                self.clients.push(Client {
                    stream,
                    phase: Phase::Header,
                    header: Vec::new(),
                    stdin: false,
                    stdout: false,
                    stderr: false,
                    read_done: false,
                    out: Vec::new(),
                });
            }
        }
    }

    fn read_output(&mut self, stream: Stream) {
        let mut buf = [0u8; 16 * 1024];
        let result = {
            let fd = self
                .output_fds()
                .into_iter()
                .find(|(s, _)| *s == stream)
                .map(|(_, fd)| fd);
            let Some(fd) = fd else { return };
            nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut buf)
        };
        match result {
            Ok(0) => self.close_output(stream),
            Ok(n) => self.deliver(stream, &buf[..n]),
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            // EIO: the last slave of the pty closed.
            Err(_) => self.close_output(stream),
        }
    }

    fn close_output(&mut self, stream: Stream) {
        match &mut self.output {
            Output::Pipes { stdout, stderr } => match stream {
                Stream::Stdout => *stdout = None,
                Stream::Stderr => *stderr = None,
            },
            Output::Pty { master } => {
                *master = None;
                self.stdin_open = false;
            }
        }
    }

    fn deliver(&mut self, stream: Stream, data: &[u8]) {
        self.log.write(stream, data);
        for c in self
            .clients
            .iter_mut()
            .filter(|c| c.phase == Phase::Attached)
        {
            let wanted = match stream {
                Stream::Stdout => c.stdout,
                Stream::Stderr => c.stderr,
            };
            if !wanted {
                continue;
            }
            if !self.tty {
                c.out.push(stream.frame_byte());
                c.out.extend_from_slice(&[0, 0, 0]);
                c.out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            }
            c.out.extend_from_slice(data);
        }
        for i in (0..self.clients.len()).rev() {
            if !self.clients[i].out.is_empty() {
                self.flush_client(i);
            }
        }
    }

    fn flush_client(&mut self, i: usize) {
        let c = &mut self.clients[i];
        while !c.out.is_empty() {
            match c.stream.write(&c.out) {
                Ok(0) => break,
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.clients.remove(i);
                    return;
                }
            }
        }
        if c.out.is_empty() && c.out.capacity() > 64 * 1024 {
            c.out = Vec::new();
        }
    }

    fn read_client(&mut self, i: usize) {
        let mut buf = [0u8; 16 * 1024];
        let n = match self.clients[i].stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => return,
            Err(_) => {
                self.clients.remove(i);
                return;
            }
        };
        if self.clients[i].phase == Phase::Header {
            if n == 0 {
                self.clients.remove(i);
                return;
            }
            self.clients[i].header.extend_from_slice(&buf[..n]);
            let header = &self.clients[i].header;
            let Some(nl) = header.iter().position(|&b| b == b'\n') else {
                if header.len() > HEADER_MAX {
                    self.clients.remove(i);
                }
                return;
            };
            let line = String::from_utf8_lossy(&header[..nl]).into_owned();
            let rest = header[nl + 1..].to_vec();
            self.clients[i].header = Vec::new();
            self.command(i, &line, &rest);
            return;
        }
        let c = &mut self.clients[i];
        if n == 0 {
            c.read_done = true;
            if c.stdin && self.stdin_once {
                self.stdin_close = true;
                if self.stdin_buf.is_empty() {
                    self.close_stdin();
                }
            }
            return;
        }
        if c.stdin && self.stdin_open {
            self.stdin_buf.extend_from_slice(&buf[..n]);
            self.write_stdin();
        }
    }

    /// Runs one control command; the client at `i` is consumed unless it attaches.
    fn command(&mut self, i: usize, line: &str, rest: &[u8]) {
        let mut words = line.split_whitespace();
        let reply = match words.next() {
            Some("attach") => {
                let flags: Vec<bool> = words.map(|w| w == "1").collect();
                let c = &mut self.clients[i];
                c.phase = Phase::Attached;
                c.stdin = flags.first().copied().unwrap_or(false);
                c.stdout = flags.get(1).copied().unwrap_or(false);
                c.stderr = flags.get(2).copied().unwrap_or(false);
                if !c.stdin {
                    // Nothing to read from this client; do not spin on its half-close.
                    c.read_done = true;
                }
                if c.stdin && !rest.is_empty() && self.stdin_open {
                    self.stdin_buf.extend_from_slice(rest);
                    self.write_stdin();
                }
                return;
            }
            Some("resize") => {
                let rows = words.next().and_then(|w| w.parse::<u16>().ok());
                let cols = words.next().and_then(|w| w.parse::<u16>().ok());
                match (&self.output, rows, cols) {
                    (Output::Pty { master: Some(m) }, Some(r), Some(c)) => {
                        match wharf_runtime::set_winsize(m.as_fd(), r, c) {
                            Ok(()) => "ok\n".to_string(),
                            Err(e) => format!("err resizing the tty: {e}\n"),
                        }
                    }
                    (Output::Pty { .. }, Some(_), Some(_)) => "err the tty is closed\n".to_string(),
                    (Output::Pipes { .. }, _, _) => "err the container has no tty\n".to_string(),
                    _ => "err usage: resize ROWS COLS\n".to_string(),
                }
            }
            Some("start") => {
                if self.started {
                    "ok\n".to_string()
                } else {
                    match self.container.start() {
                        Ok(()) => {
                            self.started = true;
                            "ok\n".to_string()
                        }
                        Err(e) => {
                            let _ = self.container.kill(Signal::SIGKILL, true);
                            format!("err {}\n", e.to_string().replace('\n', " "))
                        }
                    }
                }
            }
            Some("wait") => {
                let c = self.clients.remove(i);
                let _ = c.stream.set_nonblocking(false);
                self.waiters.push(c.stream);
                return;
            }
            Some("pid") => format!("{}\n", self.pid),
            _ => "err unknown command\n".to_string(),
        };
        let c = self.clients.remove(i);
        let mut s = c.stream;
        let _ = s.set_nonblocking(false);
        let _ = s.set_write_timeout(Some(FINAL_FLUSH_TIMEOUT));
        let _ = s.write_all(reply.as_bytes());
    }

    fn write_stdin(&mut self) {
        loop {
            if self.stdin_buf.is_empty() {
                break;
            }
            let result = match self.stdin_fd() {
                Some(fd) => nix::unistd::write(fd, &self.stdin_buf),
                None => {
                    self.stdin_buf.clear();
                    break;
                }
            };
            match result {
                Ok(n) => {
                    self.stdin_buf.drain(..n);
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                Err(_) => {
                    // The container closed its stdin.
                    self.stdin_buf.clear();
                    self.stdin_open = false;
                    self.stdin_w = None;
                    break;
                }
            }
        }
        if self.stdin_buf.is_empty() {
            if self.stdin_buf.capacity() > 64 * 1024 {
                self.stdin_buf = Vec::new();
            }
            if self.stdin_close {
                self.close_stdin();
            }
        }
    }

    fn close_stdin(&mut self) {
        // A pty has no separate stdin to close; the container sees EOF only when it ends.
        if let Output::Pipes { .. } = self.output {
            self.stdin_w = None;
            self.stdin_open = false;
        }
        self.stdin_close = false;
    }

    /// The container has exited and its output is drained: record, clean up, tell everyone.
    fn finish(mut self) {
        self.log.flush();
        let code = self.status.unwrap_or(255);
        let oom_killed = self
            .cgroup
            .as_ref()
            .and_then(|c| c.oom_kills().ok())
            .unwrap_or(0)
            > 0;
        self.reap();
        // The cgroup and libcontainer's state directory are removed directly; libcontainer's
        // delete would re-read its state and rebuild a cgroup manager from mountinfo for the
        // same rmdirs. It remains the fallback, e.g. when the cgroup path was unreadable.
        let removed = self.cgroup.as_ref().is_some_and(Cgroup::kill_and_remove);
        if !removed || self.container.remove_state().is_err() {
            let _ = self.container.delete(true);
            if let Some(cg) = &self.cgroup
                && !cg.dirs().is_empty()
            {
                cg.kill_and_remove();
            }
        }
        self.reap();
        let finished_at = now();
        let record = ExitRecord {
            exit_code: code,
            oom_killed,
            finished_at: &finished_at,
        };
        let mut line = serde_json::to_string(&record).unwrap_or_default();
        line.push('\n');
        let _ = write_atomic(&self.exit_file, line.as_bytes());
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.pid_file);
        for mut w in self.waiters.drain(..) {
            let _ = w.set_write_timeout(Some(FINAL_FLUSH_TIMEOUT));
            let _ = w.write_all(line.as_bytes());
        }
        // Connections that arrived meanwhile: answer waits, close the rest.
        self.accept();
        for c in self.clients.iter_mut() {
            let _ = c.stream.set_nonblocking(false);
            let _ = c.stream.set_write_timeout(Some(FINAL_FLUSH_TIMEOUT));
            if c.phase == Phase::Header && c.header.starts_with(b"wait") {
                let _ = c.stream.write_all(line.as_bytes());
            }
            let _ = c.stream.write_all(&c.out);
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
    }
}
