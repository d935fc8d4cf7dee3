//! The direct create path: the container's init made by the shim itself, for the specs
//! wharf's engine writes on cgroup v1 hosts.
//!
//! libcontainer clones an intermediate process and then the init, and both verify /proc and
//! every descriptor around each mount through pathrs: about 2,600 syscalls and 15 ms per
//! container here, half of a `run --rm`. This path clones the init straight into its
//! namespaces, writes the v1 cgroup files directly (the init moves itself in through `tasks`,
//! which skips the kernel's global migration lock), and resolves mount destinations with
//! `openat2(RESOLVE_IN_ROOT)`. It then records the container
//! in libcontainer's own state format, so kill, pause, exec and delete stay libcontainer's.
//! Whatever it does not cover ([`unsupported`] says what) goes through libcontainer, as does
//! everything when `WHARF_LIBCONTAINER` is set.

mod cgroupfs;
mod init;
mod mounts;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;

use libcontainer::config::YoukiConfig;
use libcontainer::container::{Container as YoukiContainer, ContainerStatus};
use nix::sched::CloneFlags;
use nix::sys::socket::{AddressFamily, SockFlag, SockType};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::container::{RuntimeError, Stdio};
use crate::seccomp::Program;
use crate::sys::Fork;
use init::{InitStdio, Plan};

/// Whether the direct path serves this host at all: cgroup v1 (legacy or hybrid), and
/// `WHARF_LIBCONTAINER` not set.
pub fn creates_directly() -> bool {
    std::env::var_os("WHARF_LIBCONTAINER").is_none()
        && matches!(
            crate::cgroup::layout(Path::new(crate::cgroup::DEFAULT_ROOT)),
            Ok(crate::cgroup::Layout::Legacy | crate::cgroup::Layout::Hybrid)
        )
}

/// Why the direct path does not take `spec`, or `None` when it does.
pub(crate) fn unsupported(spec: &Spec) -> Option<&'static str> {
    if !creates_directly() {
        return Some("WHARF_LIBCONTAINER or cgroup v2");
    }
    if spec.hooks().is_some() {
        return Some("hooks");
    }
    let Some(linux) = spec.linux() else {
        return Some("no linux section");
    };
    let Some(process) = spec.process() else {
        return Some("no process");
    };
    if linux.uid_mappings().is_some()
        || linux.gid_mappings().is_some()
        || linux.seccomp().is_some()
        || linux.intel_rdt().is_some()
        || linux.personality().is_some()
        || linux.rootfs_propagation().is_some()
        || linux.mount_label().is_some()
        || linux.cgroups_path().is_none()
    {
        return Some("linux options");
    }
    if process.apparmor_profile().is_some()
        || process.selinux_label().is_some()
        || process.io_priority().is_some()
        || process.scheduler().is_some()
        || process.exec_cpu_affinity().is_some()
    {
        return Some("process options");
    }
    for ns in linux.namespaces().iter().flatten() {
        match (ns.typ(), ns.path()) {
            (
                LinuxNamespaceType::Mount
                | LinuxNamespaceType::Ipc
                | LinuxNamespaceType::Uts
                | LinuxNamespaceType::Network,
                _,
            )
            | (LinuxNamespaceType::Pid | LinuxNamespaceType::Cgroup, None) => {}
            _ => return Some("namespaces"),
        }
    }
    if !linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::Mount && n.path().is_none())
    {
        return Some("no new mount namespace");
    }
    if let Some(r) = linux.resources() {
        let cpu_extra = r.cpu().as_ref().is_some_and(|c| {
            c.realtime_period().is_some()
                || c.realtime_runtime().is_some()
                || c.idle().is_some()
                || c.burst().is_some()
        });
        let memory_extra = r.memory().as_ref().is_some_and(|m| {
            m.kernel().is_some() || m.kernel_tcp().is_some() || m.use_hierarchy().is_some()
        });
        let io_extra = r.block_io().as_ref().is_some_and(|b| {
            b.leaf_weight().is_some()
                || b.weight_device().is_some()
                || b.throttle_read_bps_device().is_some()
                || b.throttle_write_bps_device().is_some()
                || b.throttle_read_iops_device().is_some()
                || b.throttle_write_iops_device().is_some()
        });
        if cpu_extra
            || memory_extra
            || io_extra
            || r.hugepage_limits().is_some()
            || r.network().is_some()
            || r.rdma().is_some()
            || r.unified().is_some()
        {
            return Some("resources");
        }
    }
    for m in spec.mounts().iter().flatten() {
        match m.typ().as_deref() {
            Some("proc" | "tmpfs" | "devpts" | "mqueue" | "sysfs" | "cgroup" | "bind") => {}
            None if m
                .options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind") => {}
            _ => return Some("mount types"),
        }
    }
    None
}

/// An init made by [`create`], waiting for [`DirectInit::start`].
pub(crate) struct DirectInit {
    sync: OwnedFd,
}

impl DirectInit {
    /// Lets the init exec the workload.
    pub fn start(&self) -> Result<(), RuntimeError> {
        nix::unistd::write(&self.sync, &[init::START])
            .map(drop)
            .map_err(|e| RuntimeError::Io {
                context: "starting the container".into(),
                source: e.into(),
            })
    }
}

fn namespace_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Time => CloneFlags::empty(),
    }
}

/// Creates the container's init and returns it with the libcontainer record it wrote; on
/// error nothing is left (no process, no cgroup, no state) and the message is the init's own.
pub(crate) fn create(
    id: &str,
    bundle: &Path,
    state_root: &Path,
    spec: &Spec,
    stdio: Stdio,
    seccomp: Option<Arc<Program>>,
) -> Result<(DirectInit, YoukiContainer), RuntimeError> {
    let runtime = |m: String| RuntimeError::Runtime(m);
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| runtime("no linux section".into()))?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| runtime("the spec has no root".into()))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let cgroup_path = linux.cgroups_path().clone().unwrap_or_default();
    let cgroups = cgroupfs::hierarchies(&cgroup_path)?;

    let mut clone_flags = CloneFlags::empty();
    let mut joins = Vec::new();
    let mut cgroupns = false;
    for ns in linux.namespaces().iter().flatten() {
        match ns.path() {
            Some(path) => {
                let fd = std::fs::File::open(path).map_err(|source| RuntimeError::Io {
                    context: format!("opening namespace {}", path.display()),
                    source,
                })?;
                joins.push((OwnedFd::from(fd), namespace_flag(ns.typ())));
            }
            None if ns.typ() == LinuxNamespaceType::Cgroup => cgroupns = true,
            None => clone_flags |= namespace_flag(ns.typ()),
        }
    }
    let new_uts = clone_flags.contains(CloneFlags::CLONE_NEWUTS);

    let init_stdio = match stdio {
        Stdio::Fds {
            stdin,
            stdout,
            stderr,
        } => InitStdio::Fds([stdin, stdout, stderr]),
        Stdio::Console(path) => {
            let short =
                crate::socket::SocketPath::new(&path).map_err(|source| RuntimeError::Io {
                    context: format!("console socket {}", path.display()),
                    source,
                })?;
            let s = UnixStream::connect(short.path()).map_err(|source| RuntimeError::Io {
                context: format!("connecting to {}", path.display()),
                source,
            })?;
            InitStdio::Console(s)
        }
    };
    let (ours, theirs) = nix::sys::socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| RuntimeError::Io {
        context: "creating the sync socket".into(),
        source: e.into(),
    })?;

    // Directories and limits need no pid: written before the clone.
    if let Err(e) = cgroupfs::prepare(&cgroups, linux.resources().as_ref()) {
        cgroupfs::remove(&cgroups);
        return Err(e);
    }
    let plan = Plan {
        spec,
        rootfs,
        cgroups,
        joins,
        new_uts,
        cgroupns,
        stdio: init_stdio,
        seccomp,
    };
    let pid = match crate::sys::clone_into(clone_flags.bits() as u64) {
        Ok(Fork::Child) => {
            drop(ours);
            init::run(plan, theirs)
        }
        Ok(Fork::Parent(pid)) => pid,
        Err(source) => {
            cgroupfs::remove(&plan.cgroups);
            return Err(RuntimeError::Io {
                context: "cloning the container's init".into(),
                source,
            });
        }
    };
    drop(theirs);
    let cgroups = plan.cgroups.clone();
    drop(plan);
    let fail = |message: String| {
        let child = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(child, None);
        cgroupfs::remove(&cgroups);
        RuntimeError::Runtime(message)
    };
    let mut answer = vec![0u8; 4096];
    let n = nix::unistd::read(ours.as_raw_fd(), &mut answer).unwrap_or(0);
    match answer[..n].split_first() {
        Some((&init::READY, _)) => {}
        Some((&init::FAILED, message)) => {
            return Err(fail(String::from_utf8_lossy(message).into_owned()));
        }
        _ => return Err(fail("the container's init exited during setup".into())),
    }
    match record(id, bundle, state_root, spec, pid) {
        Ok(state) => Ok((DirectInit { sync: ours }, state)),
        Err(e) => {
            let _ = std::fs::remove_dir_all(state_root.join(id));
            Err(fail(e.to_string()))
        }
    }
}

/// Writes libcontainer's state for the container, so that libcontainer can load it later.
fn record(
    id: &str,
    bundle: &Path,
    state_root: &Path,
    spec: &Spec,
    pid: i32,
) -> Result<YoukiContainer, RuntimeError> {
    let dir = state_root.join(id);
    std::fs::create_dir(&dir).map_err(|source| RuntimeError::Io {
        context: format!("creating {}", dir.display()),
        source,
    })?;
    let youki = |e: &dyn std::error::Error| RuntimeError::Runtime(e.to_string());
    YoukiConfig::from_spec(spec, id)
        .map_err(|e| youki(&e))?
        .save(&dir)
        .map_err(|e| youki(&e))?;
    let mut c = YoukiContainer::new(id, ContainerStatus::Created, Some(pid), bundle, &dir)
        .map_err(|e| youki(&e))?;
    c.set_creator(nix::unistd::geteuid().as_raw());
    c.state.created = Some(chrono::Utc::now());
    c.save().map_err(|e| youki(&e))?;
    Ok(c)
}
