//! The only `unsafe` in wharf: fork, the tty window-size ioctl, signal dispositions, and
//! taking ownership of a descriptor received over a unix socket.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// Which side of a [`fork`] the caller is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    Parent(i32),
    Child,
}

/// The number of threads of this process, from `/proc/self/stat` (field 20).
pub fn thread_count() -> io::Result<usize> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) may hold spaces and parentheses; fields resume after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    rest.split_whitespace()
        .nth(17)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other("unreadable /proc/self/stat"))
}

/// Forks the calling process. Refuses when the process has more than one thread: the child
/// of a multi-threaded process may only call async-signal-safe functions, and the shim runs
/// ordinary Rust after forking.
pub fn fork() -> io::Result<Fork> {
    if thread_count()? != 1 {
        return Err(io::Error::other("fork from a multi-threaded process"));
    }
    // SAFETY: the process has exactly one thread (checked above), so the child inherits no
    // lock held by another thread and may run arbitrary code.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Fork::Parent(child.as_raw())),
        nix::unistd::ForkResult::Child => Ok(Fork::Child),
    }
}

/// Sets the window size of the terminal behind `fd` (a pty master or slave).
pub fn set_winsize(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer, which points to a live,
    // initialised value for the duration of the call; `fd` is a valid descriptor.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCSWINSZ,
            &ws as *const libc::winsize,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Whether SIGPIPE kills this process (`true`, the default disposition) or is ignored
/// (`false`: writes to a closed pipe fail with EPIPE). An ignored SIGPIPE survives execve, so
/// a process must restore the default before it starts a container's process.
pub fn set_sigpipe_default(default: bool) -> io::Result<()> {
    let handler = if default {
        nix::sys::signal::SigHandler::SigDfl
    } else {
        nix::sys::signal::SigHandler::SigIgn
    };
    // SAFETY: SIG_DFL and SIG_IGN are not functions, so no handler code can run at an
    // arbitrary point of the program.
    unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, handler) }?;
    Ok(())
}

/// Sets the loopback interface of the calling thread's network namespace up (a new network
/// namespace starts with it down; Docker's containers have 127.0.0.1).
pub fn loopback_up() -> io::Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills `ifr_ifru.ifru_flags` of the ifreq the pointer refers to,
    // which lives for the whole call.
    if unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFFLAGS,
            &mut req as *mut libc::ifreq,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just set the flags member of the union.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads the ifreq the pointer refers to, which lives for the call.
    if unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCSIFFLAGS,
            &req as *const libc::ifreq,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Returns the heap's free memory to the kernel (the shim's RSS after libcontainer is done).
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks and shrinks glibc's own arenas; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sends `data` on a unix socket, with `fd` attached (SCM_RIGHTS) when given.
pub fn send_with_fd(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<usize> {
    let raw = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage<'_>> = raw
        .as_ref()
        .map(|r| ControlMessage::ScmRights(r))
        .into_iter()
        .collect();
    let n = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(data)],
        &cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(n)
}

/// Receives bytes from a unix socket, and the descriptor sent with them if any. Works on
/// non-blocking sockets (then `WouldBlock` when nothing is there).
pub fn recv_with_fd(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut received = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: the kernel just installed `raw` in this process for this message;
                // nothing else owns it, so wrapping it gives it exactly one owner.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                if received.is_none() {
                    received = Some(owned);
                }
            }
        }
    }
    Ok((msg.bytes, received))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_this_test_threads() {
        // The test harness runs tests on worker threads, so there are at least two here.
        let n = thread_count().unwrap();
        assert!(n >= 1);
        if n > 1 {
            assert!(fork().is_err());
        }
    }

    #[test]
    fn fds_cross_a_socket_and_ptys_resize() {
        use std::os::fd::AsFd;
        let pty = nix::pty::openpty(None, None).unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        send_with_fd(a.as_fd(), b"ok 1\n", Some(pty.master.as_fd())).unwrap();
        let mut buf = [0u8; 16];
        let (n, fd) = recv_with_fd(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"ok 1\n");
        let master = fd.unwrap();
        set_winsize(master.as_fd(), 33, 99).unwrap();
        let (rows, cols) = winsize(pty.slave.as_fd());
        assert_eq!((rows, cols), (33, 99));
    }

    fn winsize(fd: BorrowedFd<'_>) -> (u16, u16) {
        let out = std::process::Command::new("stty")
            .arg("size")
            .stdin(std::process::Stdio::from(fd.try_clone_to_owned().unwrap()))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut it = text.split_whitespace().map(|n| n.parse().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    }

    #[test]
    fn winsize_on_a_non_tty_fails() {
        let f = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsFd;
        assert!(set_winsize(f.as_fd(), 24, 80).is_err());
    }
}
