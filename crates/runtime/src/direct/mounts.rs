//! The container's file system view, built inside its new mount namespace: the spec's mounts
//! and devices below the rootfs, then pivot_root, then the masked and read-only paths.
//!
//! Every destination inside the rootfs is resolved with `openat2(RESOLVE_IN_ROOT)` from a
//! descriptor of the rootfs, so a symlink in the image can never send a mount (or a mkdir or
//! mknod) outside it; the mount then goes onto `/proc/self/fd/<n>` of that descriptor.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

use super::cgroupfs::Hierarchy;

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

pub(super) type Result<T> = std::result::Result<T, String>;

/// An `O_PATH` descriptor of `path` (following symlinks: only for trusted paths).
fn open_path(path: &Path, dir: bool) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let extra = if dir { libc::O_DIRECTORY } else { 0 };
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | extra)
        .open(path)
        .map(OwnedFd::from)
}

fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn relative(dest: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in dest.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            _ => return Err(format!("mount destination {} has \"..\"", dest.display())),
        }
    }
    Ok(out)
}

fn resolve(root: BorrowedFd<'_>, rel: &Path) -> std::io::Result<OwnedFd> {
    let c = CString::new(if rel.as_os_str().is_empty() {
        ".".into()
    } else {
        rel.as_os_str().as_encoded_bytes().to_vec()
    })
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    crate::sys::openat2(
        root,
        &c,
        (libc::O_PATH | libc::O_CLOEXEC) as u64,
        0,
        RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    )
}

/// Opens `dest` inside the rootfs, creating what is missing: directories, and for `file` an
/// empty file as the last component (a bind mount of a file needs one). A dangling symlink
/// on the way is followed inside the rootfs and its target made there, as runc does (an
/// image's `/etc/resolv.conf -> ../run/...` is common).
pub(super) fn open_dest(root: BorrowedFd<'_>, dest: &Path, file: bool) -> Result<OwnedFd> {
    open_dest_within(root, dest, file, 0)
}

fn open_dest_within(root: BorrowedFd<'_>, dest: &Path, file: bool, links: u32) -> Result<OwnedFd> {
    // The kernel's own limit on symlinks in one lookup.
    if links > 40 {
        return Err(format!("too many symlinks under {}", dest.display()));
    }
    let rel = relative(dest)?;
    match resolve(root, &rel) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(format!("opening {} in the rootfs: {e}", dest.display())),
    }
    let parts: Vec<_> = rel.components().collect();
    let mut prefix = PathBuf::new();
    let mut parent = resolve(root, &prefix).map_err(|e| format!("opening the rootfs: {e}"))?;
    for (i, part) in parts.iter().enumerate() {
        prefix.push(part);
        let fd = match resolve(root, &prefix) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                if let Ok(target) =
                    nix::fcntl::readlinkat(Some(parent.as_raw_fd()), part.as_os_str())
                {
                    // Dangling: go on from the link's target, read inside the rootfs.
                    let base = prefix.parent().map(Path::to_path_buf).unwrap_or_default();
                    let mut next = Path::new("/").join(base).join(target);
                    for rest in &parts[i + 1..] {
                        next.push(rest);
                    }
                    return open_dest_within(root, &normalize(&next), file, links + 1);
                }
                let last = i + 1 == parts.len();
                let made = if last && file {
                    nix::fcntl::openat(
                        Some(parent.as_raw_fd()),
                        part.as_os_str(),
                        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o644),
                    )
                    .and_then(nix::unistd::close)
                } else {
                    nix::sys::stat::mkdirat(
                        Some(parent.as_raw_fd()),
                        part.as_os_str(),
                        Mode::from_bits_truncate(0o755),
                    )
                };
                made.map_err(|e| format!("creating {} in the rootfs: {e}", prefix.display()))?;
                resolve(root, &prefix)
                    .map_err(|e| format!("opening {} in the rootfs: {e}", prefix.display()))?
            }
            Err(e) => return Err(format!("opening {} in the rootfs: {e}", prefix.display())),
        };
        parent = fd;
    }
    Ok(parent)
}

/// `path` with `.` and `..` folded lexically, never above `/` (the rootfs's root).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// A mount's options split into what mount(2) takes as flags, a propagation change, and the
/// file system's own data.
#[derive(Debug, PartialEq)]
pub(super) struct Options {
    pub flags: MsFlags,
    pub propagation: MsFlags,
    pub data: Vec<String>,
    pub bind: bool,
    pub recursive: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            flags: MsFlags::empty(),
            propagation: MsFlags::empty(),
            data: Vec::new(),
            bind: false,
            recursive: false,
        }
    }
}

fn propagation(opt: &str) -> MsFlags {
    let rec = if opt.starts_with('r') {
        MsFlags::MS_REC
    } else {
        MsFlags::empty()
    };
    rec | match opt.trim_start_matches('r') {
        "private" => MsFlags::MS_PRIVATE,
        "slave" => MsFlags::MS_SLAVE,
        "shared" => MsFlags::MS_SHARED,
        _ => MsFlags::MS_UNBINDABLE,
    }
}

pub(super) fn options(list: &[String]) -> Options {
    let mut o = Options::default();
    for opt in list {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => {
                o.bind = true;
                continue;
            }
            "rbind" => {
                o.bind = true;
                o.recursive = true;
                continue;
            }
            "private" | "rprivate" | "slave" | "rslave" | "shared" | "rshared" | "unbindable"
            | "runbindable" => {
                o.propagation = propagation(opt);
                continue;
            }
            "defaults" => continue,
            data => {
                o.data.push(data.to_string());
                continue;
            }
        };
        o.flags.insert(set);
        o.flags.remove(clear);
    }
    o
}

/// The per-mount flags a bind remount must keep: clearing nosuid, nodev or noexec that the
/// source had would loosen it.
fn kept_flags(fd: &OwnedFd) -> MsFlags {
    use nix::sys::statvfs::FsFlags;
    let Ok(st) = nix::sys::statvfs::fstatvfs(fd) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (from, to) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(from) {
            out.insert(to);
        }
    }
    out
}

const PER_MOUNT: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_NOATIME)
    .union(MsFlags::MS_NODIRATIME)
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME);

fn mount_at(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> std::result::Result<(), nix::Error> {
    nix::mount::mount(source, target, fstype, flags, data)
}

/// Remounts the mount on `path` (an absolute path, or `/proc/self/fd/<n>`) with `flags` added
/// to its own.
fn remount_bind(fd: &OwnedFd, flags: MsFlags) -> Result<()> {
    let all = kept_flags(fd) | (flags & PER_MOUNT);
    mount_at(
        None,
        &fd_path(fd),
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | all,
        None,
    )
    .map_err(|e| format!("remounting: {e}"))
}

/// Mounts one spec mount below the rootfs.
fn mount_one(root: BorrowedFd<'_>, m: &Mount, cgroups: &[Hierarchy]) -> Result<()> {
    let typ = m.typ().as_deref().unwrap_or("");
    let o = options(m.options().as_deref().unwrap_or_default());
    let dest = m.destination();
    if typ == "cgroup" {
        return mount_cgroups(root, dest, &o, cgroups);
    }
    let bind = o.bind || typ == "bind";
    let source = m
        .source()
        .as_ref()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| typ.to_string());
    let is_file = bind
        && std::fs::metadata(&source)
            .map(|md| !md.is_dir())
            .unwrap_or(false);
    let target = open_dest(root, dest, is_file)?;
    let fail = |e: nix::Error| format!("mounting {} on {}: {e}", source, dest.display());
    if bind {
        let mut flags = MsFlags::MS_BIND;
        if o.recursive {
            flags |= MsFlags::MS_REC;
        }
        mount_at(Some(&source), &fd_path(&target), None, flags, None).map_err(fail)?;
        let mounted = open_dest(root, dest, is_file)?;
        if !(o.flags & PER_MOUNT).is_empty() {
            remount_bind(&mounted, o.flags).map_err(|e| format!("{e} ({})", dest.display()))?;
        }
        if !o.propagation.is_empty() {
            mount_at(None, &fd_path(&mounted), None, o.propagation, None).map_err(fail)?;
        }
        return Ok(());
    }
    let data = o.data.join(",");
    mount_at(
        Some(&source),
        &fd_path(&target),
        Some(typ),
        o.flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(fail)?;
    if !o.propagation.is_empty() {
        let mounted = open_dest(root, dest, false)?;
        mount_at(None, &fd_path(&mounted), None, o.propagation, None).map_err(fail)?;
    }
    Ok(())
}

/// v1 cgroups as runc shows them: a tmpfs with each hierarchy's container directory bound
/// under the hierarchy's name, comounted controllers linked, all read-only when asked.
fn mount_cgroups(
    root: BorrowedFd<'_>,
    dest: &Path,
    o: &Options,
    cgroups: &[Hierarchy],
) -> Result<()> {
    let base = open_dest(root, dest, false)?;
    let fail = |what: &str, e: nix::Error| format!("mounting {what}: {e}");
    mount_at(
        Some("tmpfs"),
        &fd_path(&base),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )
    .map_err(|e| fail("the cgroup tmpfs", e))?;
    let base = open_dest(root, dest, false)?;
    let ro = o.flags.contains(MsFlags::MS_RDONLY);
    for h in cgroups {
        let Some(name) = h.mount_point.file_name() else {
            continue;
        };
        let sub = dest.join(name);
        let target = open_dest(root, &sub, false)?;
        mount_at(
            Some(&h.dir().to_string_lossy()),
            &fd_path(&target),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .map_err(|e| fail(&sub.to_string_lossy(), e))?;
        let mounted = open_dest(root, &sub, false)?;
        let extra = MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC
            | if ro {
                MsFlags::MS_RDONLY
            } else {
                MsFlags::empty()
            };
        remount_bind(&mounted, extra)?;
        // "cpu,cpuacct" is also reachable as "cpu" and "cpuacct".
        let name = name.to_string_lossy();
        if h.controllers.len() > 1 {
            for c in &h.controllers {
                if *c != *name {
                    let _ =
                        nix::unistd::symlinkat(name.as_ref(), Some(base.as_raw_fd()), c.as_str());
                }
            }
        }
    }
    if ro {
        remount_bind(&base, MsFlags::MS_RDONLY)?;
    }
    Ok(())
}

/// The nodes every container gets (libcontainer's and runc's defaults).
fn default_devices() -> Vec<(&'static str, u64, u64)> {
    vec![
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
}

fn make_node(
    root: BorrowedFd<'_>,
    path: &Path,
    kind: SFlag,
    mode: u32,
    dev: u64,
    owner: (u32, u32),
) -> Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(format!("bad device path {}", path.display()));
    };
    let parent = open_dest(root, dir, false)?;
    match nix::sys::stat::mknodat(
        Some(parent.as_raw_fd()),
        name,
        kind,
        Mode::from_bits_truncate(mode & 0o7777),
        dev,
    ) {
        Ok(()) => {}
        // Listed twice (a --device of a default node): the first one stands.
        Err(nix::Error::EEXIST) => return Ok(()),
        Err(e) => return Err(format!("creating device {}: {e}", path.display())),
    }
    if owner != (0, 0) {
        nix::unistd::fchownat(
            Some(parent.as_raw_fd()),
            name,
            Some(nix::unistd::Uid::from_raw(owner.0)),
            Some(nix::unistd::Gid::from_raw(owner.1)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| format!("chown of device {}: {e}", path.display()))?;
    }
    Ok(())
}

fn spec_device(root: BorrowedFd<'_>, d: &LinuxDevice) -> Result<()> {
    let kind = match d.typ() {
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => return Err(format!("device {} has type a", d.path().display())),
    };
    let dev = nix::sys::stat::makedev(d.major() as u64, d.minor() as u64);
    make_node(
        root,
        d.path(),
        kind,
        d.file_mode().unwrap_or(0o666),
        dev,
        (d.uid().unwrap_or(0), d.gid().unwrap_or(0)),
    )
}

/// Device nodes and the standard links in the container's /dev.
fn devices(root: BorrowedFd<'_>, spec: &Spec) -> Result<()> {
    let listed = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    for d in &listed {
        spec_device(root, d)?;
    }
    for (path, major, minor) in default_devices() {
        if listed.iter().any(|d| d.path() == Path::new(path)) {
            continue;
        }
        make_node(
            root,
            Path::new(path),
            SFlag::S_IFCHR,
            0o666,
            nix::sys::stat::makedev(major, minor),
            (0, 0),
        )?;
    }
    let dev = open_dest(root, Path::new("/dev"), false)?;
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        match nix::unistd::symlinkat(target, Some(dev.as_raw_fd()), name) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(format!("linking /dev/{name}: {e}")),
        }
    }
    Ok(())
}

/// Everything before pivot_root: the rootfs as a private bind of itself, the spec's mounts
/// in order, and the device nodes.
pub(super) fn build(rootfs: &Path, spec: &Spec, cgroups: &[Hierarchy]) -> Result<()> {
    // Nothing mounted in here may reach the host's mount namespace.
    mount_at(None, "/", None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None)
        .map_err(|e| format!("making / a slave: {e}"))?;
    let root_str = rootfs.to_string_lossy();
    mount_at(
        Some(&root_str),
        &root_str,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(|e| format!("binding the rootfs: {e}"))?;
    let root = open_path(rootfs, true)
        .map_err(|e| format!("opening the rootfs {}: {e}", rootfs.display()))?;
    for m in spec.mounts().iter().flatten() {
        mount_one(root.as_fd(), m, cgroups)?;
    }
    devices(root.as_fd(), spec)
}

/// Makes the rootfs `/` and detaches the old root.
pub(super) fn pivot(rootfs: &Path) -> Result<()> {
    nix::unistd::chdir(rootfs).map_err(|e| format!("entering the rootfs: {e}"))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    // The old root is stacked on the new one; keep the unmount from propagating anywhere.
    mount_at(None, ".", None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None)
        .map_err(|e| format!("making the old root a slave: {e}"))?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| format!("detaching the old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("entering /: {e}"))?;
    Ok(())
}

fn open_existing(path: &Path) -> Option<OwnedFd> {
    open_path(path, false).ok()
}

/// After pivot_root: masks (an empty read-only tmpfs over a directory, /dev/null over a
/// file), read-only binds, and a read-only root.
pub(super) fn confine(spec: &Spec) -> Result<()> {
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    for p in linux.masked_paths().iter().flatten() {
        let path = Path::new(p);
        let Some(fd) = open_existing(path) else {
            continue;
        };
        let is_dir = nix::sys::stat::fstat(fd.as_raw_fd())
            .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
            .unwrap_or(false);
        let r = if is_dir {
            mount_at(
                Some("tmpfs"),
                &fd_path(&fd),
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )
        } else {
            mount_at(
                Some("/dev/null"),
                &fd_path(&fd),
                None,
                MsFlags::MS_BIND,
                None,
            )
        };
        r.map_err(|e| format!("masking {p}: {e}"))?;
    }
    for p in linux.readonly_paths().iter().flatten() {
        let path = Path::new(p);
        let Some(fd) = open_existing(path) else {
            continue;
        };
        mount_at(
            Some(&fd_path(&fd)),
            &fd_path(&fd),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .map_err(|e| format!("binding {p} read-only: {e}"))?;
        let mounted =
            open_existing(path).ok_or_else(|| format!("{p} vanished while binding it"))?;
        remount_bind(
            &mounted,
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )
        .map_err(|e| format!("{e} ({p})"))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        let root = open_existing(Path::new("/")).ok_or("opening / failed")?;
        remount_bind(&root, MsFlags::MS_RDONLY).map_err(|e| format!("{e} (/)"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Options {
        options(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = opts(&["nosuid", "noexec", "mode=755", "size=65536k", "ro"]);
        assert_eq!(
            o.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY
        );
        assert_eq!(o.data, vec!["mode=755", "size=65536k"]);
        let o = opts(&["rbind", "rprivate"]);
        assert!(o.bind && o.recursive);
        assert_eq!(o.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        let o = opts(&["ro", "rw"]);
        assert!(o.flags.is_empty());
    }

    #[test]
    fn destinations_may_not_climb() {
        assert!(relative(Path::new("/a/../../etc")).is_err());
        assert_eq!(relative(Path::new("/a/./b")).unwrap(), PathBuf::from("a/b"));
    }

    #[test]
    fn destinations_stay_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("wharf-direct-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        // An image's symlink pointing out of the rootfs, absolute and relative.
        std::os::unix::fs::symlink(&dir, root.join("etc/out")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("up")).unwrap();
        let rootfd = open_path(&root, true).unwrap();
        // The absolute link dangles inside the root: its target is made there, not outside.
        open_dest(rootfd.as_fd(), Path::new("/etc/out/made"), false).unwrap();
        assert!(!dir.join("made").exists());
        assert!(
            root.join(dir.strip_prefix("/").unwrap())
                .join("made")
                .is_dir()
        );
        // A relative dangling link, as images have for /etc/resolv.conf.
        std::os::unix::fs::symlink("../run/stub.conf", root.join("etc/resolv.conf")).unwrap();
        open_dest(rootfd.as_fd(), Path::new("/etc/resolv.conf"), true).unwrap();
        assert!(root.join("run/stub.conf").is_file());
        // The relative one stops at the root.
        open_dest(rootfd.as_fd(), Path::new("/up/file"), true).unwrap();
        assert!(root.join("file").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
