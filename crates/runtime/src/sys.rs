//! The only `unsafe` in wharf: fork and clone3, the tty ioctls, signal dispositions, loading a
//! seccomp program, openat2, rlimits, close_range, and taking ownership of a descriptor
//! received over a unix socket.

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

/// Clones the calling process like [`fork`], into new namespaces (`CLONE_NEW*` bits in
/// `flags`). With `CLONE_NEWPID` the child is pid 1 of its namespace. Refuses when the process
/// has more than one thread, for the reason [`fork`] gives.
pub fn clone_into(flags: u64) -> io::Result<Fork> {
    if thread_count()? != 1 {
        return Err(io::Error::other("clone from a multi-threaded process"));
    }
    let mut args = [0u64; 11];
    args[0] = flags;
    args[4] = libc::SIGCHLD as u64;
    // SAFETY: clone3 without CLONE_VM and without a stack gives the child a copy of this
    // single-threaded address space, as fork(2) does; `args` is a valid `struct clone_args`
    // (88 bytes, exit_signal SIGCHLD, everything else zero) alive for the whole call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args.as_mut_ptr(),
            std::mem::size_of_val(&args),
        )
    };
    match rc {
        rc if rc < 0 => Err(io::Error::last_os_error()),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid as i32)),
    }
}

/// `openat2(2)`: opens `path` below `dir` with `resolve` (`RESOLVE_*`) restrictions.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &std::ffi::CStr,
    flags: u64,
    mode: u64,
    resolve: u64,
) -> io::Result<OwnedFd> {
    // `struct open_how` as the kernel defines it (libc's is non-exhaustive).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags,
        mode,
        resolve,
    };
    // SAFETY: `path` is NUL-terminated and `how` is a valid `struct open_how`; both outlive the
    // call, and the kernel keeps neither.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
}

/// Sets one resource limit (`resource` is the kernel's `RLIMIT_*` number).
pub fn set_rlimit(resource: u32, soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `limit` is a valid rlimit alive for the call; an unknown resource is EINVAL.
    if unsafe { libc::setrlimit(resource as libc::__rlimit_resource_t, &limit) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks every descriptor from `first` up close-on-exec.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors; it frees
    // none, so no owner in this process is left with a dangling descriptor.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the terminal behind `fd` the calling process's controlling terminal (it must lead a
/// session without one).
pub fn set_controlling_tty(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument and no pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the NIS domain name of the calling process's UTS namespace.
pub fn set_domainname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, alive for the call; the kernel
    // copies them.
    if unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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

/// Loads a classic BPF seccomp program (`struct sock_filter` records) into the calling thread
/// with `seccomp(SECCOMP_SET_MODE_FILTER, flags)`.
pub fn seccomp_set_filter(code: &[u8], flags: u32) -> io::Result<()> {
    const RECORD: usize = std::mem::size_of::<libc::sock_filter>();
    if code.is_empty() || !code.len().is_multiple_of(RECORD) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a seccomp program is a whole number of instructions",
        ));
    }
    let filter: Vec<libc::sock_filter> = code
        .chunks_exact(RECORD)
        .map(|r| libc::sock_filter {
            code: u16::from_ne_bytes([r[0], r[1]]),
            jt: r[2],
            jf: r[3],
            k: u32::from_ne_bytes([r[4], r[5], r[6], r[7]]),
        })
        .collect();
    let len = u16::try_from(filter.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp program too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points to `len` initialised instructions in `filter`, both alive for the
    // whole call; the kernel copies the program and keeps no pointer to it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Returns the heap's free memory to the kernel (the shim's RSS after libcontainer is done).
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks and shrinks glibc's own arenas; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Unmaps this process's clean file pages (program text, read-only data, shared libraries):
/// of an idle process they are mostly pages touched once at start-up or mapped by the
/// kernel's fault-around. What is needed again is faulted back from the page cache, one page
/// at a time (the mappings are marked random-access). Returns how many bytes of mappings were
/// released.
pub fn release_clean_file_pages() -> io::Result<usize> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    for m in clean_file_mappings(&smaps) {
        let Some(addr) = std::ptr::NonNull::new(m.start as *mut libc::c_void) else {
            continue;
        };
        let len = m.end - m.start;
        // SAFETY: the range is a whole mapping of this process that is file-backed, not
        // writable and holds no anonymous (modified) page, so every resident page equals the
        // file's content and dropping it changes no value the program can observe: the next
        // access reads the same bytes back from the file. No Rust reference is invalidated.
        let rc = unsafe {
            libc::madvise(addr.as_ptr(), len, libc::MADV_RANDOM);
            libc::madvise(addr.as_ptr(), len, libc::MADV_DONTNEED)
        };
        if rc == 0 {
            released += len;
        }
    }
    Ok(released)
}

#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
}

/// The mappings of `/proc/self/smaps` text that are file-backed, not writable, and have no
/// anonymous pages.
fn clean_file_mappings(smaps: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    // (mapping, qualifies so far)
    let mut cur: Option<(Mapping, bool)> = None;
    let flush = |cur: &mut Option<(Mapping, bool)>, out: &mut Vec<Mapping>| {
        if let Some((m, true)) = cur.take() {
            out.push(m);
        }
    };
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some((a, b)) = first.split_once('-')
            && !first.ends_with(':')
            && let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            flush(&mut cur, &mut out);
            let perms = words.next().unwrap_or("");
            let inode = words.nth(2).unwrap_or("0");
            let path = words.next().unwrap_or("");
            let ok = !perms.contains('w') && inode != "0" && path.starts_with('/');
            cur = Some((Mapping { start, end }, ok));
        } else if first == "Anonymous:"
            && let Some((_, ok)) = cur.as_mut()
            && words.next() != Some("0")
        {
            *ok = false;
        }
    }
    flush(&mut cur, &mut out);
    out
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
    fn only_clean_file_mappings_are_released() {
        let smaps = "\
55d0a0000000-55d0a0100000 r--p 00000000 fe:00 1234  /usr/bin/x
Size:               1024 kB
Anonymous:             0 kB
55d0a0100000-55d0a0200000 r-xp 00100000 fe:00 1234  /usr/bin/x
Anonymous:             0 kB
55d0a0200000-55d0a0300000 r--p 00200000 fe:00 1234  /usr/bin/x
Anonymous:           400 kB
55d0a0300000-55d0a0400000 rw-p 00300000 fe:00 1234  /usr/bin/x
Anonymous:             0 kB
7f0000000000-7f0000001000 rw-p 00000000 00:00 0
Anonymous:             4 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0  [vdso]
Anonymous:             0 kB
";
        assert_eq!(
            clean_file_mappings(smaps),
            vec![
                Mapping {
                    start: 0x55d0a0000000,
                    end: 0x55d0a0100000
                },
                Mapping {
                    start: 0x55d0a0100000,
                    end: 0x55d0a0200000
                },
            ]
        );
    }

    #[test]
    fn releasing_file_pages_keeps_the_program_working() {
        let released = release_clean_file_pages().unwrap();
        assert!(released > 0);
        // Code and read-only data come back from the file.
        let v: Vec<String> = (0..100).map(|i| format!("{i}")).collect();
        assert_eq!(v.join(",").len(), 289);
    }

    #[test]
    fn malformed_seccomp_programs_are_refused() {
        assert!(seccomp_set_filter(&[], 0).is_err());
        assert!(seccomp_set_filter(&[0; 7], 0).is_err());
    }

    #[test]
    fn winsize_on_a_non_tty_fails() {
        let f = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsFd;
        assert!(set_winsize(f.as_fd(), 24, 80).is_err());
    }
}
