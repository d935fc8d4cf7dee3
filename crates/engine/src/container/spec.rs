//! The OCI runtime spec of a container, built from its image config and create options with
//! Docker's defaults: capabilities, seccomp, masked and read-only /proc and /sys paths, a
//! minimal /dev, and resources. `--privileged` lifts the confinement.
//!
//! This host may lack CAP_SYS_RESOURCE: limits it cannot grant (rlimits above its hard
//! limits, a lower oom_score_adj) are clamped with a warning instead of failing the start.

pub mod seccomp;
pub mod user;

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilities, LinuxCpu, LinuxDevice, LinuxDeviceCgroup,
    LinuxDeviceType, LinuxMemory, LinuxNamespace, LinuxNamespaceType, LinuxPids, LinuxResources,
    Mount, PosixRlimit, PosixRlimitBuilder, PosixRlimitType, Process, Root, Spec, User,
};
use wharf_api::models::HostConfig;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{0}")]
    Invalid(String),
    #[error("runtime spec")]
    Oci(#[from] oci_spec::OciSpecError),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a container's spec is built from.
pub struct SpecInput<'a> {
    pub id: &'a str,
    /// The mounted root filesystem.
    pub rootfs: &'a Path,
    /// Entrypoint and command, resolved.
    pub args: Vec<String>,
    /// The image's env merged with the options', PATH defaulted.
    pub env: Vec<String>,
    pub cwd: String,
    /// Docker's `-u` forms: "", "name", "uid", "uid:gid", "name:group".
    pub user: String,
    pub hostname: String,
    pub tty: bool,
    pub open_stdin: bool,
    pub host: &'a HostConfig,
    /// Files bind-mounted over `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`: (container path, host file).
    pub etc_files: &'a [(String, PathBuf)],
    /// The cgroup under which the container's own is made ("wharf": `/wharf/<id>`).
    pub cgroup_parent: &'a str,
    /// The binary `--init` runs as pid 1 (tini).
    pub init_binary: Option<&'a Path>,
    /// A network namespace to join (`--network container:<id>`) instead of a new one.
    pub netns: Option<&'a Path>,
}

/// What an exec's process is built from; the rest comes from the container's spec.
pub struct ExecInput<'a> {
    /// The container's spec (its `config.json`).
    pub base: &'a Spec,
    pub rootfs: &'a Path,
    pub args: Vec<String>,
    /// `-e` values; they override the container's.
    pub env: Vec<String>,
    /// Empty: the container's.
    pub cwd: String,
    /// Empty: the container's user.
    pub user: String,
    pub tty: bool,
    pub privileged: bool,
}

/// Where `--init` puts the init binary, as Docker does.
pub const INIT_PATH: &str = "/sbin/docker-init";
const DEFAULT_SHM: i64 = 64 * 1024 * 1024;
const CAP_SYS_RESOURCE_BIT: u32 = 24;

/// Every capability wharf knows, in kernel bit order.
const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Docker's default capability set.
pub fn default_capabilities() -> &'static [&'static str] {
    DEFAULT_CAPS
}

/// Canonicalises a capability name as Docker accepts it ("chown", "CAP_CHOWN", "cap_chown",
/// "ALL"); unknown names are refused before libcontainer sees them.
pub fn validate_capability(name: &str) -> Result<String, SpecError> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPS.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(SpecError::Invalid(format!(
            "unknown capability: \"{name}\""
        )))
    }
}

/// Reads a capability mask line ("CapBnd:", "CapEff:") of /proc/self/status.
fn own_cap_mask(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

fn has_sys_resource() -> bool {
    own_cap_mask("CapEff:") & (1 << CAP_SYS_RESOURCE_BIT) != 0
}

/// The capabilities a container gets: Docker's default set (or all for `--privileged`),
/// with `--cap-add`/`--cap-drop` applied, limited to what this host can grant.
fn capability_set(
    privileged: bool,
    add: &[String],
    drop: &[String],
    host_mask: u64,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, SpecError> {
    let add: Vec<String> = add
        .iter()
        .map(|c| validate_capability(c))
        .collect::<Result<_, _>>()?;
    let drop: Vec<String> = drop
        .iter()
        .map(|c| validate_capability(c))
        .collect::<Result<_, _>>()?;
    let mut caps: Vec<String> = if privileged || add.iter().any(|c| c == "ALL") {
        ALL_CAPS.iter().map(|c| c.to_string()).collect()
    } else {
        DEFAULT_CAPS.iter().map(|c| c.to_string()).collect()
    };
    if !privileged {
        if drop.iter().any(|c| c == "ALL") {
            caps.clear();
        } else {
            caps.retain(|c| !drop.contains(c));
        }
        for c in add.iter().filter(|c| *c != "ALL") {
            if !caps.contains(c) {
                caps.push(c.clone());
            }
        }
    }
    let mut granted = Vec::with_capacity(caps.len());
    for c in caps {
        let bit = ALL_CAPS.iter().position(|x| *x == c).unwrap_or(63);
        if host_mask & (1u64 << bit) != 0 {
            granted.push(c);
        } else if add.contains(&c) {
            warnings.push(format!("{c} is not available on this host (not in wharf's bounding set); it was not granted"));
        }
    }
    Ok(granted)
}

fn oci_caps(names: &[String]) -> Result<LinuxCapabilities, SpecError> {
    let set: std::collections::HashSet<Capability> = names
        .iter()
        .map(|n| serde_json::from_value(serde_json::Value::String(n.clone())))
        .collect::<Result<_, _>>()
        .map_err(|e| SpecError::Invalid(format!("capability: {e}")))?;
    let mut c = LinuxCapabilities::default();
    c.set_bounding(Some(set.clone()));
    c.set_effective(Some(set.clone()));
    c.set_permitted(Some(set));
    c.set_inheritable(None);
    c.set_ambient(None);
    Ok(c)
}

fn rlimit_type(name: &str) -> Option<(PosixRlimitType, nix::sys::resource::Resource)> {
    use nix::sys::resource::Resource as R;
    Some(match name {
        "as" => (PosixRlimitType::RlimitAs, R::RLIMIT_AS),
        "core" => (PosixRlimitType::RlimitCore, R::RLIMIT_CORE),
        "cpu" => (PosixRlimitType::RlimitCpu, R::RLIMIT_CPU),
        "data" => (PosixRlimitType::RlimitData, R::RLIMIT_DATA),
        "fsize" => (PosixRlimitType::RlimitFsize, R::RLIMIT_FSIZE),
        "locks" => (PosixRlimitType::RlimitLocks, R::RLIMIT_LOCKS),
        "memlock" => (PosixRlimitType::RlimitMemlock, R::RLIMIT_MEMLOCK),
        "msgqueue" => (PosixRlimitType::RlimitMsgqueue, R::RLIMIT_MSGQUEUE),
        "nice" => (PosixRlimitType::RlimitNice, R::RLIMIT_NICE),
        "nofile" => (PosixRlimitType::RlimitNofile, R::RLIMIT_NOFILE),
        "nproc" => (PosixRlimitType::RlimitNproc, R::RLIMIT_NPROC),
        "rss" => (PosixRlimitType::RlimitRss, R::RLIMIT_RSS),
        "rtprio" => (PosixRlimitType::RlimitRtprio, R::RLIMIT_RTPRIO),
        "rttime" => (PosixRlimitType::RlimitRttime, R::RLIMIT_RTTIME),
        "sigpending" => (PosixRlimitType::RlimitSigpending, R::RLIMIT_SIGPENDING),
        "stack" => (PosixRlimitType::RlimitStack, R::RLIMIT_STACK),
        _ => return None,
    })
}

/// Clamps a requested (soft, hard) to a host hard limit it may not exceed.
fn clamp_rlimit(
    name: &str,
    soft: u64,
    hard: u64,
    host_hard: u64,
    warnings: &mut Vec<String>,
) -> (u64, u64) {
    if hard <= host_hard {
        return (soft.min(hard), hard);
    }
    let (s, h) = (soft.min(host_hard), host_hard);
    warnings.push(format!(
        "ulimit {name}={soft}:{hard} exceeds the host's hard limit {host_hard} and wharf cannot raise it (no CAP_SYS_RESOURCE): clamped to {s}:{h}"
    ));
    (s, h)
}

fn rlimits(
    host: &HostConfig,
    can_raise: bool,
    warnings: &mut Vec<String>,
) -> Result<Vec<PosixRlimit>, SpecError> {
    let mut out = Vec::new();
    for u in host.ulimits.iter().flatten() {
        let name = u.name.clone().unwrap_or_default();
        let (typ, res) = rlimit_type(&name)
            .ok_or_else(|| SpecError::Invalid(format!("invalid ulimit type: {name}")))?;
        let to_u64 = |v: Option<i64>| match v {
            Some(n) if n < 0 => u64::MAX,
            Some(n) => n as u64,
            None => u64::MAX,
        };
        let (mut soft, mut hard) = (to_u64(u.soft), to_u64(u.hard.or(u.soft)));
        if soft > hard {
            return Err(SpecError::Invalid(format!(
                "ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
            )));
        }
        if !can_raise && let Ok((_, host_hard)) = nix::sys::resource::getrlimit(res) {
            (soft, hard) = clamp_rlimit(&name, soft, hard, host_hard, warnings);
        }
        out.push(
            PosixRlimitBuilder::default()
                .typ(typ)
                .soft(soft)
                .hard(hard)
                .build()?,
        );
    }
    Ok(out)
}

/// The oom_score_adj to ask for: without CAP_SYS_RESOURCE nothing below the current value.
fn oom_score_adj(
    requested: Option<i64>,
    can_lower: bool,
    current: i64,
    warnings: &mut Vec<String>,
) -> Option<i32> {
    let v = requested?.clamp(-1000, 1000);
    if v < current && !can_lower {
        warnings.push(format!(
            "oom_score_adj {v} is below wharf's own ({current}) and cannot be lowered without CAP_SYS_RESOURCE: using {current}"
        ));
        return Some(current as i32);
    }
    Some(v as i32)
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

fn default_mounts(privileged: bool, shm_size: i64) -> Vec<Mount> {
    let shm = format!("size={}k", shm_size / 1024);
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &[
                "nosuid",
                "noexec",
                "nodev",
                if privileged { "rw" } else { "ro" },
            ],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &[
                "nosuid",
                "noexec",
                "nodev",
                "relatime",
                if privileged { "rw" } else { "ro" },
            ],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm],
        ),
    ]
}

const PROPAGATIONS: &[&str] = &[
    "shared", "rshared", "slave", "rslave", "private", "rprivate",
];

/// `-v /host:/ctr[:opts]`: a recursive bind mount. Named volumes are not supported yet.
fn bind_mount(spec: &str, readonly_rootfs: bool) -> Result<Mount, SpecError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        _ => {
            return Err(SpecError::Invalid(format!(
                "invalid volume specification: '{spec}'"
            )));
        }
    };
    if !dst.starts_with('/') {
        return Err(SpecError::Invalid(format!(
            "invalid volume specification: '{spec}': invalid mount config: destination must be an absolute path"
        )));
    }
    if !src.starts_with('/') {
        return Err(SpecError::Invalid(format!(
            "invalid volume specification: '{spec}': named volumes are not supported"
        )));
    }
    let _ = readonly_rootfs;
    let mut options = vec!["rbind".to_string()];
    let mut propagation = "rprivate".to_string();
    let mut ro = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => ro = true,
            "rw" => ro = false,
            "z" | "Z" | "nocopy" | "consistent" | "cached" | "delegated" => {}
            p if PROPAGATIONS.contains(&p) => propagation = p.to_string(),
            other => return Err(SpecError::Invalid(format!("invalid mode: {other}"))),
        }
    }
    if ro {
        options.push("ro".into());
    }
    options.push(propagation);
    // Docker creates a missing bind source as a directory.
    if std::fs::symlink_metadata(src).is_err() {
        std::fs::create_dir_all(src).map_err(|source| SpecError::Io {
            context: format!("creating bind source {src}"),
            source,
        })?;
    }
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dst));
    m.set_typ(Some("bind".into()));
    m.set_source(Some(PathBuf::from(src)));
    m.set_options(Some(options));
    Ok(m)
}

/// `--tmpfs /x:opts`.
fn tmpfs_mount(dest: &str, opts: &str) -> Result<Mount, SpecError> {
    if !dest.starts_with('/') {
        return Err(SpecError::Invalid(format!(
            "invalid tmpfs destination {dest}: must be an absolute path"
        )));
    }
    let mut options: Vec<&str> = vec!["nosuid", "nodev", "noexec"];
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "exec" => options.retain(|x| *x != "noexec"),
            "suid" => options.retain(|x| *x != "nosuid"),
            "dev" => options.retain(|x| *x != "nodev"),
            other => options.push(other),
        }
    }
    Ok(mount(dest, "tmpfs", "tmpfs", &options))
}

/// Mounts from `HostConfig.Mounts` (`--mount type=bind|tmpfs`).
fn api_mount(m: &wharf_api::models::Mount) -> Result<Mount, SpecError> {
    use wharf_api::models::MountType;
    let target = m.target.clone().unwrap_or_default();
    match m.typ {
        Some(MountType::BIND) => {
            let src = m.source.clone().unwrap_or_default();
            if !Path::new(&src).exists() {
                return Err(SpecError::Invalid(format!(
                    "invalid mount config for type \"bind\": bind source path does not exist: {src}"
                )));
            }
            let ro = if m.read_only.unwrap_or(false) {
                ":ro"
            } else {
                ""
            };
            bind_mount(&format!("{src}:{target}{ro}"), false)
        }
        Some(MountType::TMPFS) => {
            let mut opts = Vec::new();
            if let Some(t) = &m.tmpfs_options {
                if let Some(size) = t.size_bytes {
                    opts.push(format!("size={size}"));
                }
                if let Some(mode) = t.mode {
                    opts.push(format!("mode={mode:o}"));
                }
            }
            tmpfs_mount(&target, &opts.join(","))
        }
        _ => Err(SpecError::Invalid(format!(
            "mount type {:?} is not supported",
            m.typ
        ))),
    }
}

fn device_cgroup(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut d = LinuxDeviceCgroup::default();
    d.set_allow(allow);
    d.set_typ(typ);
    d.set_major(major);
    d.set_minor(minor);
    d.set_access(Some(access.to_string()));
    d
}

/// Docker's default device cgroup: deny all but the standard nodes, ptys, tun, and mknod.
fn default_device_rules() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{B, C};
    let mut v = vec![device_cgroup(false, None, None, None, "rwm")];
    v.push(device_cgroup(true, Some(C), None, None, "m"));
    v.push(device_cgroup(true, Some(B), None, None, "m"));
    for (major, minor) in [
        (1, 3),
        (1, 8),
        (1, 7),
        (5, 0),
        (1, 5),
        (1, 9),
        (5, 1),
        (5, 2),
        (10, 200),
    ] {
        v.push(device_cgroup(
            true,
            Some(C),
            Some(major),
            Some(minor),
            "rwm",
        ));
    }
    v.push(device_cgroup(true, Some(C), Some(136), None, "rwm"));
    v
}

/// A host device node as a spec device, at `container_path`.
fn host_device(host_path: &Path, container_path: &str) -> Result<LinuxDevice, SpecError> {
    let md = std::fs::metadata(host_path).map_err(|source| SpecError::Io {
        context: format!(
            "error gathering device information while adding custom device \"{}\"",
            host_path.display()
        ),
        source,
    })?;
    let typ = if md.file_type().is_char_device() {
        LinuxDeviceType::C
    } else if md.file_type().is_block_device() {
        LinuxDeviceType::B
    } else {
        return Err(SpecError::Invalid(format!(
            "{} is not a device node",
            host_path.display()
        )));
    };
    let rdev = md.rdev();
    let mut d = LinuxDevice::default();
    d.set_path(PathBuf::from(container_path));
    d.set_typ(typ);
    d.set_major(nix::sys::stat::major(rdev) as i64);
    d.set_minor(nix::sys::stat::minor(rdev) as i64);
    d.set_file_mode(Some(md.mode() & 0o777));
    d.set_uid(Some(md.uid()));
    d.set_gid(Some(md.gid()));
    Ok(d)
}

/// Every device node under the host's /dev, for `--privileged` (as Docker lists them).
fn host_devices() -> Vec<LinuxDevice> {
    fn walk(dir: &Path, out: &mut Vec<LinuxDevice>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                let name = e.file_name();
                if !matches!(
                    name.to_str(),
                    Some("pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".lxd-mounts" | ".udev")
                ) {
                    walk(&p, out);
                }
            } else if (ft.is_char_device() || ft.is_block_device())
                && p != Path::new("/dev/console")
                && let Ok(d) = host_device(&p, &p.to_string_lossy())
            {
                out.push(d);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/dev"), &mut out);
    out
}

fn devices(
    host: &HostConfig,
    privileged: bool,
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), SpecError> {
    let (mut devs, mut rules) = if privileged {
        (
            host_devices(),
            vec![device_cgroup(true, None, None, None, "rwm")],
        )
    } else {
        (Vec::new(), default_device_rules())
    };
    for d in host.devices.iter().flatten() {
        let src = d.path_on_host.clone().unwrap_or_default();
        let dst = d
            .path_in_container
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| src.clone());
        let perms = d
            .cgroup_permissions
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "rwm".into());
        if perms.chars().any(|c| !matches!(c, 'r' | 'w' | 'm')) {
            return Err(SpecError::Invalid(format!("invalid device mode: {perms}")));
        }
        let dev = host_device(Path::new(&src), &dst)?;
        rules.push(device_cgroup(
            true,
            Some(dev.typ()),
            Some(dev.major()),
            Some(dev.minor()),
            &perms,
        ));
        devs.retain(|x| x.path() != dev.path());
        devs.push(dev);
    }
    Ok((devs, rules))
}

fn resources(host: &HostConfig, warnings: &mut Vec<String>) -> Result<LinuxResources, SpecError> {
    let mut r = LinuxResources::default();
    let mut mem = LinuxMemory::default();
    let memory = host.memory.unwrap_or(0);
    if memory > 0 {
        mem.set_limit(Some(memory));
        let swap = host.memory_swap.unwrap_or(0);
        let swap_supported = swap_accounting();
        match swap {
            0 if swap_supported => {
                mem.set_swap(Some(memory * 2));
            }
            -1 if swap_supported => {
                mem.set_swap(Some(-1));
            }
            s if s > 0 && s < memory => {
                return Err(SpecError::Invalid(
                    "Minimum memoryswap limit should be larger than memory limit, see usage".into(),
                ));
            }
            s if s > 0 && swap_supported => {
                mem.set_swap(Some(s));
            }
            _ => warnings.push(
                "Your kernel does not support swap limit capabilities or the cgroup is not mounted. Memory limited without swap."
                    .into(),
            ),
        }
    } else if host.memory_swap.unwrap_or(0) > 0 {
        return Err(SpecError::Invalid(
            "You should always set the Memory limit when using Memoryswap limit, see usage".into(),
        ));
    }
    if let Some(res) = host.memory_reservation.filter(|v| *v > 0) {
        mem.set_reservation(Some(res));
    }
    if let Some(sw) = host.memory_swappiness.filter(|v| *v >= 0) {
        mem.set_swappiness(Some(sw as u64));
    }
    if host.oom_kill_disable == Some(true) {
        mem.set_disable_oom_killer(Some(true));
    }
    r.set_memory(Some(mem));

    let mut cpu = LinuxCpu::default();
    let nano = host.nano_cpus.unwrap_or(0);
    if nano > 0 {
        if host.cpu_quota.unwrap_or(0) > 0 || host.cpu_period.unwrap_or(0) > 0 {
            return Err(SpecError::Invalid(
                "Conflicting options: Nano CPUs and CPU Period/Quota cannot both be set".into(),
            ));
        }
        let ncpu = std::thread::available_parallelism()
            .map(|n| n.get() as i64)
            .unwrap_or(1);
        if nano > ncpu * 1_000_000_000 {
            return Err(SpecError::Invalid(format!(
                "Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available"
            )));
        }
        cpu.set_period(Some(100_000));
        cpu.set_quota(Some(nano * 100_000 / 1_000_000_000));
    } else {
        if let Some(q) = host.cpu_quota.filter(|v| *v != 0) {
            cpu.set_quota(Some(q));
        }
        if let Some(p) = host.cpu_period.filter(|v| *v > 0) {
            cpu.set_period(Some(p as u64));
        }
    }
    if let Some(s) = host.cpu_shares.filter(|v| *v > 0) {
        cpu.set_shares(Some(s as u64));
    }
    if let Some(c) = host.cpuset_cpus.clone().filter(|c| !c.is_empty()) {
        cpu.set_cpus(Some(c));
    }
    if let Some(m) = host.cpuset_mems.clone().filter(|c| !c.is_empty()) {
        cpu.set_mems(Some(m));
    }
    r.set_cpu(Some(cpu));
    if let Some(limit) = host.pids_limit.filter(|l| *l > 0) {
        let mut p = LinuxPids::default();
        p.set_limit(limit);
        r.set_pids(Some(p));
    }
    if let Some(w) = host.blkio_weight.filter(|w| *w > 0) {
        let mut b = oci_spec::runtime::LinuxBlockIo::default();
        b.set_weight(Some(w));
        r.set_block_io(Some(b));
    }
    Ok(r)
}

/// Whether memory+swap limits can be set (v1 needs swap accounting; v2 has memory.swap.max).
fn swap_accounting() -> bool {
    Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
        || Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

struct SecurityOpts {
    no_new_privileges: bool,
    seccomp: bool,
}

fn security_opts(opts: &[String]) -> Result<SecurityOpts, SpecError> {
    let mut s = SecurityOpts {
        no_new_privileges: false,
        seccomp: true,
    };
    for o in opts {
        let (key, value) = match o.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (o.as_str(), None),
        };
        match (key, value) {
            ("no-new-privileges", None) => s.no_new_privileges = true,
            ("no-new-privileges", Some(v)) => {
                s.no_new_privileges = v
                    .parse::<bool>()
                    .map_err(|_| SpecError::Invalid(format!("invalid --security-opt 2: \"{o}\"")))?
            }
            ("seccomp", Some("unconfined")) => s.seccomp = false,
            ("seccomp", Some(_)) => {
                return Err(SpecError::Invalid("custom seccomp profiles are not supported; use seccomp=unconfined or the default".into()));
            }
            // No AppArmor or SELinux on this runtime: accepted and without effect, as Docker
            // does on hosts without them.
            ("apparmor" | "label", _) => {}
            _ => {
                return Err(SpecError::Invalid(format!(
                    "invalid --security-opt 1: \"{o}\""
                )));
            }
        }
    }
    Ok(s)
}

fn namespaces(host: &HostConfig, netns: Option<&Path>) -> Vec<LinuxNamespace> {
    let ns = |t: LinuxNamespaceType| {
        let mut n = LinuxNamespace::default();
        n.set_typ(t);
        n
    };
    let mut v = vec![
        ns(LinuxNamespaceType::Pid),
        ns(LinuxNamespaceType::Ipc),
        ns(LinuxNamespaceType::Uts),
        ns(LinuxNamespaceType::Mount),
    ];
    if host.network_mode.as_deref() != Some("host") {
        let mut n = ns(LinuxNamespaceType::Network);
        n.set_path(netns.map(Path::to_path_buf));
        v.push(n);
    }
    use wharf_api::models::HostConfigCgroupnsModeEnum as Mode;
    let private_cgroupns = match host.cgroupns_mode {
        Some(Mode::PRIVATE) => true,
        Some(Mode::HOST) => false,
        // Docker's default: private on cgroup v2, the host's on v1.
        _ => Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
    };
    if private_cgroupns {
        v.push(ns(LinuxNamespaceType::Cgroup));
    }
    v
}

/// Sets `KEY=value` in `env` unless the key is already there.
fn env_default(env: &mut Vec<String>, key: &str, value: &str) {
    if !env.iter().any(|e| e.split('=').next() == Some(key)) {
        env.push(format!("{key}={value}"));
    }
}

fn user_of(u: &user::ExecUser) -> User {
    let mut user = User::default();
    user.set_uid(u.uid);
    user.set_gid(u.gid);
    user.set_additional_gids((!u.additional_gids.is_empty()).then(|| u.additional_gids.clone()));
    user
}

/// The container's runtime spec, and warnings for what was clamped or ignored.
pub fn build(input: &SpecInput<'_>) -> Result<(Spec, Vec<String>), SpecError> {
    let host = input.host;
    let mut warnings = Vec::new();
    let privileged = host.privileged.unwrap_or(false);
    let sec = security_opts(host.security_opt.as_deref().unwrap_or_default())?;
    let caps = capability_set(
        privileged,
        host.cap_add.as_deref().unwrap_or_default(),
        host.cap_drop.as_deref().unwrap_or_default(),
        own_cap_mask("CapBnd:"),
        &mut warnings,
    )?;
    if input.args.is_empty() {
        return Err(SpecError::Invalid("no command specified".into()));
    }
    let user = user::resolve(
        input.rootfs,
        &input.user,
        host.group_add.as_deref().unwrap_or_default(),
    )?;
    let can_raise = has_sys_resource();

    let mut args = Vec::with_capacity(input.args.len() + 2);
    if input.init_binary.is_some() {
        args.push(INIT_PATH.to_string());
        args.push("--".to_string());
    }
    args.extend(input.args.iter().cloned());
    let mut env = input.env.clone();
    env_default(
        &mut env,
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    if !input.hostname.is_empty() {
        env_default(&mut env, "HOSTNAME", &input.hostname);
    }
    if input.tty {
        env_default(&mut env, "TERM", "xterm");
    }
    let mut process = Process::default();
    process.set_terminal(Some(input.tty));
    process.set_args(Some(args));
    process.set_env(Some(env));
    process.set_cwd(PathBuf::from(if input.cwd.is_empty() {
        "/"
    } else {
        input.cwd.as_str()
    }));
    process.set_user(user_of(&user));
    process.set_capabilities(Some(oci_caps(&caps)?));
    let limits = rlimits(host, can_raise, &mut warnings)?;
    process.set_rlimits((!limits.is_empty()).then_some(limits));
    // libcontainer reads "absent" as "leave it" and Some(false) as "set seccomp late without
    // no_new_privs", which fails; only ever say Some(true).
    process.set_no_new_privileges(sec.no_new_privileges.then_some(true));
    let current_oom = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    process.set_oom_score_adj(oom_score_adj(
        host.oom_score_adj.filter(|v| *v != 0),
        can_raise,
        current_oom,
        &mut warnings,
    ));
    process.set_apparmor_profile(None);
    process.set_console_size(None);

    let mut root = Root::default();
    root.set_path(input.rootfs.to_path_buf());
    root.set_readonly(Some(host.readonly_rootfs.unwrap_or(false)));

    let readonly = host.readonly_rootfs.unwrap_or(false);
    let mut user_mounts: Vec<Mount> = Vec::new();
    for (dest, file) in input.etc_files {
        let mut m = mount(
            dest,
            "bind",
            &file.to_string_lossy(),
            &["rbind", "rprivate"],
        );
        if readonly {
            m.set_options(Some(vec!["rbind".into(), "rprivate".into(), "ro".into()]));
        }
        user_mounts.push(m);
    }
    if let Some(init) = input.init_binary {
        user_mounts.push(mount(
            INIT_PATH,
            "bind",
            &init.to_string_lossy(),
            &["bind", "ro", "rprivate"],
        ));
    }
    for b in host.binds.iter().flatten() {
        user_mounts.push(bind_mount(b, readonly)?);
    }
    for m in host.mounts.iter().flatten() {
        user_mounts.push(api_mount(m)?);
    }
    let mut tmpfs: Vec<(&String, &String)> = host.tmpfs.iter().flatten().collect();
    tmpfs.sort();
    for (dest, opts) in tmpfs {
        user_mounts.push(tmpfs_mount(dest, opts)?);
    }
    // Parents before children, as Docker sorts them.
    user_mounts.sort_by_key(|m| m.destination().components().count());
    let shm = host.shm_size.filter(|s| *s > 0).unwrap_or(DEFAULT_SHM);
    let mut mounts = default_mounts(privileged, shm);
    mounts.retain(|d| {
        !user_mounts
            .iter()
            .any(|u| u.destination() == d.destination())
    });
    mounts.extend(user_mounts);

    let (devs, dev_rules) = devices(host, privileged)?;
    let mut res = resources(host, &mut warnings)?;
    res.set_devices(Some(dev_rules));
    let sysctl: HashMap<String, String> = host.sysctls.clone().unwrap_or_default();

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(host, input.netns))
        .cgroups_path(PathBuf::from(wharf_runtime::cgroup::container_path(
            input.cgroup_parent,
            input.id,
        )))
        .resources(res)
        .devices(devs)
        .sysctl(sysctl)
        .build()?;
    linux.set_masked_paths(None);
    linux.set_readonly_paths(None);
    linux.set_seccomp(None);
    if !privileged {
        linux.set_masked_paths(Some(MASKED_PATHS.iter().map(|s| s.to_string()).collect()));
        linux.set_readonly_paths(Some(READONLY_PATHS.iter().map(|s| s.to_string()).collect()));
        if sec.seccomp {
            linux.set_seccomp(Some(seccomp::for_libcontainer(seccomp::default_profile(
                &caps,
            ))));
        }
    }
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);

    let mut spec = Spec::default();
    spec.set_version("1.0.2".into());
    spec.set_root(Some(root));
    spec.set_process(Some(process));
    spec.set_hostname((!input.hostname.is_empty()).then(|| input.hostname.clone()));
    spec.set_mounts(Some(mounts));
    spec.set_linux(Some(linux));
    spec.set_hooks(None);
    spec.set_annotations(None);
    Ok((spec, warnings))
}

/// Takes the seccomp profile out of `spec` and names a precompiled program instead (compiled
/// once per distinct profile into `cache`), so the container's init loads it instead of
/// compiling it (`wharf_runtime::seccomp` has the why and the CAP_SYS_ADMIN hand-off). A spec
/// without seccomp is left alone.
pub fn precompile_seccomp(spec: &mut Spec, cache: &Path) -> Result<(), SpecError> {
    let Some(mut linux) = spec.linux().clone() else {
        return Ok(());
    };
    let Some(profile) = linux.seccomp().clone() else {
        return Ok(());
    };
    // The spec carries libcontainer's reading of masked-equal tests; the compiler takes the
    // OCI one (the swap is its own inverse).
    let profile = seccomp::for_libcontainer(profile);
    let io = |context: String| move |source| SpecError::Io { context, source };
    let json = serde_json::to_vec(&profile)
        .map_err(|e| SpecError::Invalid(format!("seccomp profile: {e}")))?;
    let key = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&json));
    let path = cache.join(format!("{key}.bpf"));
    if !path.is_file() {
        let program = wharf_runtime::seccomp::compile(&profile)
            .map_err(|e| SpecError::Invalid(error_chain(&e)))?;
        std::fs::create_dir_all(cache).map_err(io(format!("creating {}", cache.display())))?;
        let tmp = cache.join(format!("{key}.{}.tmp", crate::content::random_name()));
        // Synced: a program cut short by a crash would be trusted by every later start.
        let write = |tmp: &Path| -> std::io::Result<()> {
            let mut f = std::fs::File::create(tmp)?;
            std::io::Write::write_all(&mut f, &program.code)?;
            f.sync_all()
        };
        write(&tmp).map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("writing {}", path.display())))?;
    }
    let flags = wharf_runtime::seccomp::flags(&profile);
    linux.set_seccomp(None);
    spec.set_linux(Some(linux));
    let mut annotations = spec.annotations().clone().unwrap_or_default();
    annotations.insert(
        wharf_runtime::seccomp::ANNOTATION_BPF.into(),
        path.display().to_string(),
    );
    annotations.insert(
        wharf_runtime::seccomp::ANNOTATION_FLAGS.into(),
        flags.to_string(),
    );
    spec.set_annotations(Some(annotations));
    if let Some(process) = spec.process_mut()
        && process.no_new_privileges() != Some(true)
        && let Some(mut caps) = process.capabilities().clone()
        && !caps
            .bounding()
            .as_ref()
            .is_some_and(|b| b.contains(&Capability::SysAdmin))
    {
        // Held only until the program is loaded; never in the bounding set.
        let mut effective = caps.effective().clone().unwrap_or_default();
        effective.insert(Capability::SysAdmin);
        caps.set_effective(Some(effective));
        let mut permitted = caps.permitted().clone().unwrap_or_default();
        permitted.insert(Capability::SysAdmin);
        caps.set_permitted(Some(permitted));
        process.set_capabilities(Some(caps));
    }
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// The process of an `exec` in a container whose spec is `input.base`.
pub fn exec_process(input: &ExecInput<'_>) -> Result<Process, SpecError> {
    let base = input
        .base
        .process()
        .clone()
        .ok_or_else(|| SpecError::Invalid("the container's spec has no process".into()))?;
    if input.args.is_empty() {
        return Err(SpecError::Invalid("No exec command specified".into()));
    }
    let mut env = base.env().clone().unwrap_or_default();
    for kv in &input.env {
        let key = kv.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    if input.tty {
        env_default(&mut env, "TERM", "xterm");
    }
    let mut p = base.clone();
    p.set_args(Some(input.args.clone()));
    p.set_env(Some(env));
    p.set_terminal(Some(input.tty));
    p.set_console_size(None);
    if !input.cwd.is_empty() {
        p.set_cwd(PathBuf::from(&input.cwd));
    }
    if !input.user.is_empty() {
        p.set_user(user_of(&user::resolve(input.rootfs, &input.user, &[])?));
    }
    if input.privileged {
        let mut w = Vec::new();
        let all = capability_set(true, &[], &[], own_cap_mask("CapBnd:"), &mut w)?;
        p.set_capabilities(Some(oci_caps(&all)?));
    }
    // The container's oom_score_adj already applies to everything in it.
    p.set_oom_score_adj(None);
    Ok(p)
}

#[cfg(test)]
mod tests;
