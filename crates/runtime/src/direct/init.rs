//! The container's init, from the clone to the execve of the workload. Runs in the cloned
//! child of the (single-threaded) shim; reports "ready" or an error on the sync socket, then
//! waits there for "start".

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use caps::{CapSet, CapsHashSet};
use libcontainer::capabilities::CapabilityExt;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{Capabilities, Spec};

use super::cgroupfs::Hierarchy;
use super::mounts;
use crate::seccomp::Program;

/// What the init's standard streams are.
pub(super) enum InitStdio {
    /// Become 0, 1 and 2; `None` keeps the shim's own (/dev/null).
    Fds([Option<OwnedFd>; 3]),
    /// Make a pty in the container and send its master over this (connected) socket.
    Console(UnixStream),
}

/// Everything the init needs, prepared by the shim before the clone.
pub(super) struct Plan<'a> {
    pub spec: &'a Spec,
    pub rootfs: PathBuf,
    pub cgroups: Vec<Hierarchy>,
    /// Namespaces to join (`setns`), by descriptor.
    pub joins: Vec<(OwnedFd, CloneFlags)>,
    pub new_uts: bool,
    pub cgroupns: bool,
    pub stdio: InitStdio,
    pub seccomp: Option<std::sync::Arc<Program>>,
}

pub(super) const READY: u8 = b'r';
pub(super) const START: u8 = b's';
pub(super) const FAILED: u8 = b'e';

/// Reads one byte from the shim; `None` when it went away.
fn receive(sync: &OwnedFd) -> Option<u8> {
    let mut b = [0u8; 1];
    match nix::unistd::read(sync.as_raw_fd(), &mut b) {
        Ok(1) => Some(b[0]),
        _ => None,
    }
}

/// Runs the init in the cloned child; never returns.
pub(super) fn run(plan: Plan<'_>, sync: OwnedFd) -> ! {
    match setup(plan, &sync) {
        Ok(never) => match never {},
        Err(message) => {
            let mut msg = vec![FAILED];
            msg.extend_from_slice(message.as_bytes());
            let _ = nix::unistd::write(&sync, &msg);
            std::process::exit(1)
        }
    }
}

fn caps_of(set: &Option<Capabilities>) -> CapsHashSet {
    set.iter().flatten().map(|c| c.to_cap()).collect()
}

fn setup(plan: Plan<'_>, sync: &OwnedFd) -> Result<Infallible, String> {
    let spec = plan.spec;
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("setting the parent-death signal: {e}"))?;
    // A blocked signal stays blocked across execve: the workload starts with none.
    nix::sys::signal::SigSet::empty()
        .thread_set_mask()
        .map_err(|e| format!("clearing the signal mask: {e}"))?;
    super::cgroupfs::join_self(&plan.cgroups).map_err(|e| e.to_string())?;
    // Device nodes get exactly the modes the spec gives.
    nix::sys::stat::umask(Mode::empty());
    for (fd, kind) in &plan.joins {
        nix::sched::setns(fd, *kind).map_err(|e| format!("joining namespace {kind:?}: {e}"))?;
    }
    drop(plan.joins);
    if plan.new_uts {
        if let Some(h) = spec.hostname() {
            nix::unistd::sethostname(h).map_err(|e| format!("setting the hostname: {e}"))?;
        }
        if let Some(d) = spec.domainname() {
            crate::sys::set_domainname(d).map_err(|e| format!("setting the domain name: {e}"))?;
        }
    }
    mounts::build(&plan.rootfs, spec, &plan.cgroups)?;
    mounts::pivot(&plan.rootfs)?;
    let linux = spec.linux().as_ref();
    for (key, value) in linux
        .and_then(|l| l.sysctl().as_ref())
        .into_iter()
        .flatten()
    {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| format!("setting sysctl {key}: {e}"))?;
    }
    mounts::confine(spec)?;

    if plan.cgroupns {
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| format!("creating the cgroup namespace: {e}"))?;
    }

    let process = spec.process().as_ref().ok_or("the spec has no process")?;
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    match plan.stdio {
        InitStdio::Fds(fds) => {
            for (target, fd) in fds.into_iter().enumerate() {
                if let Some(fd) = fd {
                    nix::unistd::dup2(fd.as_raw_fd(), target as i32)
                        .map_err(|e| format!("setting up stdio: {e}"))?;
                }
            }
        }
        InitStdio::Console(socket) => console(&socket)?,
    }
    for r in process.rlimits().iter().flatten() {
        crate::sys::set_rlimit(r.typ() as u32, r.soft(), r.hard())
            .map_err(|e| format!("setting rlimit {:?}: {e}", r.typ()))?;
    }
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| format!("setting oom_score_adj: {e}"))?;
    }
    let cwd = PathBuf::from(process.cwd());
    // The working directory may be new to the image (Docker makes it).
    std::fs::create_dir_all(&cwd).map_err(|e| format!("creating {}: {e}", cwd.display()))?;
    if process.no_new_privileges() == Some(true) {
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    }
    identity(spec)?;
    nix::unistd::chdir(&cwd).map_err(|e| format!("chdir to {}: {e}", cwd.display()))?;
    let umask = process.user().umask().unwrap_or(0o022);
    nix::sys::stat::umask(Mode::from_bits_truncate(umask as libc::mode_t));

    let args = process.args().clone().unwrap_or_default();
    let arg0 = args.first().ok_or("no command specified")?;
    let mut env = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home_of(process.user().uid())));
    }
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("");
    let program = crate::executor::check_executable(arg0, path_var)?;
    let cstr = |s: &str| CString::new(s).map_err(|_| format!("{s:?} holds a NUL byte"));
    let c_program = CString::new(program.as_os_str().as_encoded_bytes())
        .map_err(|_| "the program path holds a NUL byte".to_string())?;
    let c_args = args
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<Vec<_>, _>>()?;
    let c_env = env.iter().map(|e| cstr(e)).collect::<Result<Vec<_>, _>>()?;

    // Last before the hand-off: capabilities are final, and what is left (the sync socket,
    // prctl, close_range, execve) is allowed by every profile.
    if let Some(p) = &plan.seccomp {
        crate::seccomp::install(p).map_err(|e| format!("loading seccomp: {e}"))?;
    }
    nix::unistd::write(sync, &[READY]).map_err(|e| format!("reporting ready: {e}"))?;
    if receive(sync) != Some(START) {
        std::process::exit(0);
    }
    // The shim may end before the workload; the workload must not die with it.
    let _ = nix::sys::prctl::set_pdeathsig(None);
    crate::sys::cloexec_from(3).map_err(|e| format!("closing descriptors: {e}"))?;
    match nix::unistd::execve(&c_program, &c_args, &c_env) {
        Err(e) => {
            // Started already: the shim is not listening any more, the container's stderr is.
            eprintln!("exec {}: {e}", program.display());
            std::process::exit(if e == nix::Error::ENOENT { 127 } else { 126 })
        }
    }
}

/// The user's home directory from the container's /etc/passwd, as runc sets HOME when the
/// environment has none; "/" for a user it does not list.
fn home_of(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() >= 6 && fields[2].parse() == Ok(uid)).then(|| fields[5].to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into())
}

/// Opens a pty in the container's devpts, hands its master to the shim, and makes the slave
/// the session's controlling terminal and the init's stdio.
fn console(socket: &UnixStream) -> Result<(), String> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| format!("opening /dev/ptmx: {e}"))?;
    nix::pty::grantpt(&master).map_err(|e| format!("grantpt: {e}"))?;
    nix::pty::unlockpt(&master).map_err(|e| format!("unlockpt: {e}"))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| format!("ptsname: {e}"))?;
    let slave = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&name)
            .map(OwnedFd::from)
            .map_err(|e| format!("opening {name}: {e}"))?
    };
    crate::sys::send_with_fd(socket.as_fd(), b"pty", Some(master.as_fd()))
        .map_err(|e| format!("sending the pty master: {e}"))?;
    drop(master);
    crate::sys::set_controlling_tty(slave.as_fd())
        .map_err(|e| format!("setting the controlling terminal: {e}"))?;
    for target in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), target)
            .map_err(|e| format!("setting up the pty: {e}"))?;
    }
    Ok(())
}

/// Capabilities, groups and user, in the order that keeps what the spec wants: the bounding
/// set first, then the ids (keeping the permitted set across setuid), then the other sets.
fn identity(spec: &Spec) -> Result<(), String> {
    let process = spec.process().as_ref().ok_or("the spec has no process")?;
    let wanted = process.capabilities().as_ref();
    let bounding = wanted.map(|c| caps_of(c.bounding())).unwrap_or_default();
    let cap_err = |what: &str, e: caps::errors::CapsError| format!("{what}: {e}");
    let current = caps::read(None, CapSet::Bounding).map_err(|e| cap_err("reading caps", e))?;
    for c in current.difference(&bounding) {
        caps::drop(None, CapSet::Bounding, *c).map_err(|e| cap_err("dropping a capability", e))?;
    }
    let user = process.user();
    nix::sys::prctl::set_keepcaps(true).map_err(|e| format!("keepcaps: {e}"))?;
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    let gid = Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setgid {gid}: {e}"))?;
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setuid {uid}: {e}"))?;
    nix::sys::prctl::set_keepcaps(false).map_err(|e| format!("keepcaps: {e}"))?;
    let sets = [
        (
            CapSet::Effective,
            wanted.map(|c| caps_of(c.effective())).unwrap_or_default(),
        ),
        (
            CapSet::Permitted,
            wanted.map(|c| caps_of(c.permitted())).unwrap_or_default(),
        ),
        (
            CapSet::Inheritable,
            wanted.map(|c| caps_of(c.inheritable())).unwrap_or_default(),
        ),
    ];
    for (set, value) in &sets {
        caps::set(None, *set, value).map_err(|e| cap_err("setting capabilities", e))?;
    }
    for c in wanted.map(|c| caps_of(c.ambient())).unwrap_or_default() {
        caps::raise(None, CapSet::Ambient, c).map_err(|e| cap_err("raising an ambient cap", e))?;
    }
    Ok(())
}
