//! A container's cgroup on v1 hierarchies (legacy and hybrid layouts), written directly:
//! directories, limits and the init's membership are plain file writes once the hierarchies
//! are known, and they are read once from `/proc/self/mountinfo`.

use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

use crate::container::RuntimeError;

/// One mounted v1 hierarchy.
#[derive(Debug, Clone)]
pub(crate) struct Hierarchy {
    pub mount_point: PathBuf,
    /// Its controllers (`cpu`, `memory`, ...); empty for a named hierarchy (`name=systemd`).
    pub controllers: Vec<String>,
    /// Where the container is in this hierarchy: its own cgroup for a controller hierarchy,
    /// else the caller's.
    pub path: PathBuf,
}

impl Hierarchy {
    /// The container's directory on this hierarchy.
    pub fn dir(&self) -> PathBuf {
        self.mount_point
            .join(self.path.strip_prefix("/").unwrap_or(&self.path))
    }

    pub fn joined(&self) -> bool {
        !self.controllers.is_empty()
    }

    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let context = context.into();
    move |source| RuntimeError::Io { context, source }
}

/// The v1 hierarchies mounted in this mount namespace, each with where a container whose
/// cgroup is `container_path` sits in it.
pub(crate) fn hierarchies(container_path: &Path) -> Result<Vec<Hierarchy>, RuntimeError> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(io("reading mountinfo"))?;
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(io("reading our cgroups"))?;
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        // "<id> <parent> <dev> <root> <mount point> <opts> [optional...] - <type> <src> <super>"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut theirs = right.split(' ');
        if theirs.next() != Some("cgroup") {
            continue;
        }
        let super_opts = theirs.nth(1).unwrap_or_default();
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut controllers = Vec::new();
        let mut name = None;
        for opt in super_opts.split(',') {
            match opt {
                "rw" | "ro" | "xattr" | "clone_children" | "noprefix" | "cpuset_v2_mode" => {}
                o if o.starts_with("release_agent=") => {}
                o if o.starts_with("name=") => name = Some(o.to_string()),
                o => controllers.push(o.to_string()),
            }
        }
        let key = match &name {
            Some(n) if controllers.is_empty() => n.clone(),
            _ => controllers.join(","),
        };
        let path = if controllers.is_empty() {
            own_path(&own, &key).unwrap_or_else(|| PathBuf::from("/"))
        } else {
            container_path.to_path_buf()
        };
        out.push(Hierarchy {
            mount_point: PathBuf::from(unescape(mount_point)),
            controllers,
            path,
        });
    }
    if !out.iter().any(Hierarchy::joined) {
        return Err(RuntimeError::Runtime(
            "no cgroup v1 controller is mounted".into(),
        ));
    }
    Ok(out)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn own_path(proc_cgroup: &str, key: &str) -> Option<PathBuf> {
    proc_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, k, p) = (parts.next()?, parts.next()?, parts.next()?);
        (k == key).then(|| PathBuf::from(p))
    })
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), RuntimeError> {
    let path = dir.join(file);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(io(format!("writing {value:?} to {}", path.display())))
}

/// A new cpuset cgroup starts with no cpus and no memory nodes; give each level its parent's.
fn fill_cpuset(h: &Hierarchy) -> Result<(), RuntimeError> {
    let mut dir = h.mount_point.clone();
    let rel = h.path.strip_prefix("/").unwrap_or(&h.path).to_path_buf();
    for part in rel.components() {
        let child = dir.join(part);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let current = std::fs::read_to_string(child.join(file)).unwrap_or_default();
            if current.trim().is_empty() {
                let inherited = std::fs::read_to_string(dir.join(file))
                    .map_err(io(format!("reading {}", dir.join(file).display())))?;
                write(&child, file, inherited.trim())?;
            }
        }
        dir = child;
    }
    Ok(())
}

fn device_rule(rule: &LinuxDeviceCgroup) -> String {
    let typ = match rule.typ() {
        None | Some(LinuxDeviceType::A) => "a",
        Some(LinuxDeviceType::B) => "b",
        Some(LinuxDeviceType::C | LinuxDeviceType::U) => "c",
        Some(LinuxDeviceType::P) => "p",
    };
    let num = |n: Option<i64>| n.map_or_else(|| "*".to_string(), |v| v.to_string());
    let access = rule.access().clone().unwrap_or_else(|| "rwm".into());
    format!("{typ} {}:{} {access}", num(rule.major()), num(rule.minor()))
}

/// Creates the container's directories and writes its limits; the caller removes them again
/// with [`remove`] if anything later fails.
pub(crate) fn prepare(
    hierarchies: &[Hierarchy],
    resources: Option<&LinuxResources>,
) -> Result<(), RuntimeError> {
    for h in hierarchies.iter().filter(|h| h.joined()) {
        let dir = h.dir();
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        if h.has("cpuset") {
            fill_cpuset(h)?;
        }
        let Some(r) = resources else { continue };
        if h.has("memory")
            && let Some(m) = r.memory()
        {
            if let Some(v) = m.limit() {
                write(&dir, "memory.limit_in_bytes", &v.to_string())?;
            }
            if let Some(v) = m.swap() {
                write(&dir, "memory.memsw.limit_in_bytes", &v.to_string())?;
            }
            if let Some(v) = m.reservation() {
                write(&dir, "memory.soft_limit_in_bytes", &v.to_string())?;
            }
            if let Some(v) = m.swappiness() {
                write(&dir, "memory.swappiness", &v.to_string())?;
            }
            if m.disable_oom_killer() == Some(true) {
                write(&dir, "memory.oom_control", "1")?;
            }
        }
        if let Some(c) = r.cpu() {
            if h.has("cpu") {
                if let Some(v) = c.shares() {
                    write(&dir, "cpu.shares", &v.to_string())?;
                }
                if let Some(v) = c.period() {
                    write(&dir, "cpu.cfs_period_us", &v.to_string())?;
                }
                if let Some(v) = c.quota() {
                    write(&dir, "cpu.cfs_quota_us", &v.to_string())?;
                }
            }
            if h.has("cpuset") {
                if let Some(v) = c.cpus() {
                    write(&dir, "cpuset.cpus", v)?;
                }
                if let Some(v) = c.mems() {
                    write(&dir, "cpuset.mems", v)?;
                }
            }
        }
        if h.has("pids")
            && let Some(p) = r.pids()
        {
            let v = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            };
            write(&dir, "pids.max", &v)?;
        }
        if h.has("blkio")
            && let Some(w) = r.block_io().as_ref().and_then(|b| b.weight())
        {
            // Only some I/O schedulers take a weight; Docker ignores it elsewhere too.
            for file in ["blkio.weight", "blkio.bfq.weight"] {
                if dir.join(file).exists() {
                    write(&dir, file, &w.to_string())?;
                    break;
                }
            }
        }
        if h.has("devices") {
            for rule in r.devices().iter().flatten() {
                let file = if rule.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                write(&dir, file, &device_rule(rule))?;
            }
        }
    }
    Ok(())
}

/// Moves the calling thread, the whole of a single-threaded process, into the container's
/// cgroup on every controller hierarchy. Writing "0" to a v1 `tasks` file is the one
/// migration the kernel makes without its global threadgroup lock; every other one (a pid
/// into `cgroup.procs`, as libcontainer does) first waits for an RCU grace period when no
/// migration happened in the last one, 8-12 ms on this VM against 0.05-0.09 ms.
pub(crate) fn join_self(hierarchies: &[Hierarchy]) -> Result<(), RuntimeError> {
    for h in hierarchies.iter().filter(|h| h.joined()) {
        write(&h.dir(), "tasks", "0")?;
    }
    Ok(())
}

/// Removes the container's directories (they must hold no process any more).
pub(crate) fn remove(hierarchies: &[Hierarchy]) {
    for h in hierarchies.iter().filter(|h| h.joined()) {
        let _ = std::fs::remove_dir(h.dir());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_rules_read_as_the_kernel_wants_them() {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(false);
        r.set_access(Some("rwm".into()));
        assert_eq!(device_rule(&r), "a *:* rwm");
        r.set_typ(Some(LinuxDeviceType::C));
        r.set_major(Some(136));
        assert_eq!(device_rule(&r), "c 136:* rwm");
        r.set_minor(Some(2));
        r.set_access(Some("m".into()));
        assert_eq!(device_rule(&r), "c 136:2 m");
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn own_paths_come_from_proc_cgroup() {
        let text = "9:name=systemd:/user.slice\n4:memory:/x\n0::/\n";
        assert_eq!(
            own_path(text, "name=systemd"),
            Some(PathBuf::from("/user.slice"))
        );
        assert_eq!(own_path(text, "memory"), Some(PathBuf::from("/x")));
        assert_eq!(own_path(text, "pids"), None);
    }
}
