//! Cgroup facts about a container: its statistics, the OOM-kill count, the freezer, and where
//! its directories are. Works on cgroup v1 (legacy and hybrid) and v2 (unified); none of it
//! forks, so the daemon may call it.

use std::path::{Path, PathBuf};

use libcgroups::common::{
    AnyCgroupManager, CgroupConfig, CgroupManager, CgroupSetup, FreezerState,
    create_cgroup_manager_with_root, get_cgroup_setup_with_root,
};

pub use libcgroups::stats::{BlkioDeviceStat, Stats};

/// Where the cgroup hierarchies are mounted on a normal system.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("detecting the cgroup layout under {0}")]
    Layout(PathBuf, #[source] libcgroups::common::GetCgroupSetupError),
    #[error("cgroup {path}: {message}")]
    Manager { path: PathBuf, message: String },
    #[error("reading {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("removing {0}")]
    Remove(PathBuf, #[source] std::io::Error),
}

/// How the cgroup hierarchies are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Only v1 hierarchies, one per controller (or a few combined).
    Legacy,
    /// v1 controllers plus an empty v2 hierarchy at `<root>/unified`.
    Hybrid,
    /// One v2 hierarchy at the root.
    Unified,
}

/// The layout of the hierarchies under `root` (normally [`DEFAULT_ROOT`]).
pub fn layout(root: &Path) -> Result<Layout, CgroupError> {
    match get_cgroup_setup_with_root(root)
        .map_err(|e| CgroupError::Layout(root.to_path_buf(), e))?
    {
        CgroupSetup::Legacy => Ok(Layout::Legacy),
        CgroupSetup::Hybrid => Ok(Layout::Hybrid),
        CgroupSetup::Unified => Ok(Layout::Unified),
    }
}

/// Moves the calling process into the cgroup it is already in, on one hierarchy: a no-op
/// that still takes the kernel's cgroup migration lock. After a quiet spell that lock first
/// waits for an RCU grace period (8-11 ms on this VM); a migration within about one grace
/// period of another is quick (~0.2 ms). The engine calls this on a spare thread when a
/// container is about to start, so the runtime's move of the container into its own cgroup a
/// few milliseconds later finds the lock warm instead of paying the grace period itself.
pub fn warm_migration() -> std::io::Result<()> {
    warm_migration_under(Path::new(DEFAULT_ROOT))
}

fn warm_migration_under(root: &Path) -> std::io::Result<()> {
    let own = std::fs::read_to_string("/proc/self/cgroup")?;
    let unified = root.join("cgroup.controllers").exists();
    let mut last = std::io::Error::from(std::io::ErrorKind::NotFound);
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        // Named v1 hierarchies (name=systemd) belong to their manager; leave them alone.
        if controllers.starts_with("name=") {
            continue;
        }
        let hierarchy = match (controllers.is_empty(), unified) {
            (true, true) => root.to_path_buf(),
            (true, false) => root.join("unified"),
            (false, _) => root.join(controllers),
        };
        let procs = hierarchy
            .join(path.trim_start_matches('/'))
            .join("cgroup.procs");
        // "0" names the writer itself.
        match std::fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"0"))
        {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The cgroup path wharf gives a container: `/<parent>/<id>`.
pub fn container_path(parent: &str, id: &str) -> String {
    let parent = parent.trim_matches('/');
    if parent.is_empty() {
        format!("/{id}")
    } else {
        format!("/{parent}/{id}")
    }
}

/// One container's cgroup, `path` relative to the hierarchies under `root`.
#[derive(Debug, Clone)]
pub struct Cgroup {
    root: PathBuf,
    path: PathBuf,
    /// The directories as listed by [`Cgroup::listed`], else found anew each time.
    listed: Option<Vec<PathBuf>>,
}

impl Cgroup {
    pub fn new(root: impl Into<PathBuf>, path: impl Into<PathBuf>) -> Cgroup {
        Cgroup {
            root: root.into(),
            path: path.into(),
            listed: None,
        }
    }

    /// The same cgroup with its directories listed once, now: for a holder that kills and
    /// removes it later, when listing the hierarchies again (a directory scan and two stats
    /// per hierarchy, three times over) is a good part of a short container's exit.
    pub fn listed(mut self) -> Cgroup {
        self.listed = Some(self.scan());
        self
    }

    /// The cgroup at `path` on this system's hierarchies.
    pub fn system(path: impl Into<PathBuf>) -> Cgroup {
        Cgroup::new(DEFAULT_ROOT, path)
    }

    fn rel(&self) -> &Path {
        self.path.strip_prefix("/").unwrap_or(&self.path)
    }

    fn manager(&self) -> Result<AnyCgroupManager, CgroupError> {
        create_cgroup_manager_with_root(
            Some(&self.root),
            CgroupConfig {
                cgroup_path: self.path.clone(),
                systemd_cgroup: false,
                container_name: String::new(),
            },
        )
        .map_err(|e| self.error(e))
    }

    fn error(&self, e: impl std::fmt::Display) -> CgroupError {
        CgroupError::Manager {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// CPU, memory, pids and block-io counters (what `docker stats` shows).
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        self.manager()?.stats().map_err(|e| self.error(e))
    }

    /// Freezes (`true`) or thaws every process of the cgroup.
    pub fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        let state = if frozen {
            FreezerState::Frozen
        } else {
            FreezerState::Thawed
        };
        self.manager()?.freeze(state).map_err(|e| self.error(e))
    }

    /// The file that counts OOM kills: v1 `memory.oom_control`, v2 `memory.events`.
    pub fn oom_file(&self) -> Result<PathBuf, CgroupError> {
        Ok(match layout(&self.root)? {
            Layout::Legacy | Layout::Hybrid => self
                .root
                .join("memory")
                .join(self.rel())
                .join("memory.oom_control"),
            Layout::Unified => self.root.join(self.rel()).join("memory.events"),
        })
    }

    /// How many processes the kernel OOM-killed in this cgroup. A missing file (no memory
    /// controller, or the cgroup is gone) counts as none.
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        let file = self.oom_file()?;
        match std::fs::read_to_string(&file) {
            Ok(text) => Ok(parse_oom_kills(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(CgroupError::Read(file, e)),
        }
    }

    /// Every directory this cgroup has on any hierarchy under the root (empty once removed).
    pub fn dirs(&self) -> Vec<PathBuf> {
        match &self.listed {
            Some(dirs) => dirs.iter().filter(|d| d.is_dir()).cloned().collect(),
            None => self.scan(),
        }
    }

    /// Where the directories are or were: the listed ones, else those there now.
    fn candidates(&self) -> std::borrow::Cow<'_, [PathBuf]> {
        match &self.listed {
            Some(dirs) => std::borrow::Cow::Borrowed(dirs),
            None => std::borrow::Cow::Owned(self.scan()),
        }
    }

    fn scan(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let direct = self.root.join(self.rel());
        if direct.is_dir() {
            out.push(direct);
        }
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let dir = e.path().join(self.rel());
                if e.path().is_dir() && dir.is_dir() {
                    out.push(dir);
                }
            }
        }
        out
    }

    /// Removes the cgroup's directory on every hierarchy (it must hold no process). Plain
    /// rmdirs: libcgroups' managers re-read mountinfo once per controller and sleep between
    /// retries, which made up most of a short container's teardown.
    pub fn remove(&self) -> Result<(), CgroupError> {
        for dir in self.candidates().iter() {
            match std::fs::remove_dir(dir) {
                Ok(()) => {}
                // Combined hierarchies (`cpu` -> `cpu,cpuacct`) list one directory twice.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(CgroupError::Remove(dir.clone(), e)),
            }
        }
        Ok(())
    }

    /// SIGKILLs every process in the cgroup on every hierarchy and thaws it, so that frozen
    /// processes die too. Without a freezer round trip a process may fork meanwhile; callers
    /// that need the cgroup gone loop ([`Cgroup::kill_and_remove`]).
    pub fn kill_all(&self) {
        for dir in self.candidates().iter() {
            // A directory already gone has no processes.
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            thaw_dir(dir);
        }
    }

    /// Kills whatever is left in the cgroup and removes it, retrying while the kernel still
    /// counts exiting tasks (rmdir is EBUSY until they are gone). True when nothing remains.
    pub fn kill_and_remove(&self) -> bool {
        for attempt in 0..100u64 {
            // Usually empty already (the container's pid namespace died with its init): the
            // rmdirs come first, and reading every directory's processes only when one refuses.
            // With the directories listed, a clean remove leaves none of them; otherwise look
            // again for one a scan may have missed.
            if self.remove().is_ok() && (self.listed.is_some() || self.dirs().is_empty()) {
                return true;
            }
            self.kill_all();
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(5 * attempt.min(10)));
            }
        }
        false
    }
}

/// Thaws a frozen cgroup directory (v1 `freezer.state`, v2 `cgroup.freeze`); others are left
/// alone. Opened without O_CREAT: cgroupfs refuses new files anyway.
fn thaw_dir(dir: &Path) {
    use std::io::Write;
    for (file, thawed) in [("freezer.state", "THAWED"), ("cgroup.freeze", "0")] {
        let path = dir.join(file);
        if let Ok(state) = std::fs::read_to_string(&path)
            && state.trim() != thawed
            && let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&path)
        {
            let _ = f.write_all(thawed.as_bytes());
        }
    }
}

/// The `oom_kill N` line of `memory.oom_control` (v1) or `memory.events` (v2).
pub fn parse_oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_counts_parse_on_both_versions() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        let v2 = "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_oom_kills(v1), 2);
        assert_eq!(parse_oom_kills(v2), 1);
        assert_eq!(parse_oom_kills("oom_kill_disable 1\n"), 0);
    }

    #[test]
    fn paths() {
        assert_eq!(container_path("wharf", "abc"), "/wharf/abc");
        assert_eq!(container_path("/wharf/", "abc"), "/wharf/abc");
        assert_eq!(container_path("", "abc"), "/abc");
    }

    #[test]
    fn a_listed_cgroup_is_removed_from_the_hierarchies_it_had() {
        let root = std::env::temp_dir().join(format!("wharf-cgroup-{}", std::process::id()));
        for h in ["cpu", "memory"] {
            std::fs::create_dir_all(root.join(h).join("wharf/x")).unwrap();
        }
        std::fs::create_dir_all(root.join("pids")).unwrap();
        let cg = Cgroup::new(&root, "/wharf/x").listed();
        let mut dirs = cg.dirs();
        dirs.sort();
        assert_eq!(
            dirs,
            vec![root.join("cpu/wharf/x"), root.join("memory/wharf/x")]
        );
        // A hierarchy that appears later is not the listed cgroup's.
        std::fs::create_dir_all(root.join("pids/wharf/x")).unwrap();
        assert!(cg.kill_and_remove());
        assert!(cg.dirs().is_empty());
        assert!(root.join("pids/wharf/x").is_dir());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn warming_the_migration_lock_leaves_the_process_where_it_was() {
        let before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        warm_migration().unwrap();
        assert_eq!(
            std::fs::read_to_string("/proc/self/cgroup").unwrap(),
            before
        );
        // A root without hierarchies has nowhere to write.
        assert!(warm_migration_under(Path::new("/nonexistent/wharf-cgroup-root")).is_err());
    }

    #[test]
    fn this_host_is_detected() {
        let l = layout(Path::new(DEFAULT_ROOT)).unwrap();
        let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        assert_eq!(l == Layout::Unified, unified);
        let cg = Cgroup::system("/wharf/x");
        let f = cg.oom_file().unwrap();
        if unified {
            assert_eq!(f, PathBuf::from("/sys/fs/cgroup/wharf/x/memory.events"));
        } else {
            assert_eq!(
                f,
                PathBuf::from("/sys/fs/cgroup/memory/wharf/x/memory.oom_control")
            );
        }
    }

    /// The v2 code path on the unified hierarchy this host has next to its v1 ones (hybrid):
    /// create through the v2 manager, freeze, read stats, remove.
    #[test]
    fn v2_manager_on_the_unified_hierarchy() {
        let root = Path::new("/sys/fs/cgroup/unified");
        let Ok(Layout::Unified) = layout(root) else {
            eprintln!("skipped: no cgroup2 hierarchy at {}", root.display());
            return;
        };
        let path = format!("/wharf-test/v2-{}", std::process::id());
        let cg = Cgroup::new(root, &path);
        struct Cleanup(PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir(&self.0);
                let _ = self.0.parent().map(std::fs::remove_dir);
            }
        }
        let _cleanup = Cleanup(root.join(&path[1..]));
        assert_eq!(
            cg.oom_file().unwrap(),
            root.join(&path[1..]).join("memory.events")
        );
        // The v2 manager's apply() also loads a BPF device filter, which needs a memlock rlimit
        // this host cannot raise (no CAP_SYS_RESOURCE); make the directory as the kernel would.
        std::fs::create_dir_all(root.join(&path[1..])).unwrap();
        assert_eq!(cg.dirs(), vec![root.join(&path[1..])]);
        cg.freeze(true).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join(&path[1..]).join("cgroup.freeze"))
                .unwrap()
                .trim(),
            "1"
        );
        cg.freeze(false).unwrap();
        // Stats need the cpu/memory/pids controllers, which a hybrid host keeps on v1.
        let controllers =
            std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        if controllers.contains("memory") && controllers.contains("pids") {
            assert!(cg.stats().is_ok());
        }
        assert_eq!(cg.oom_kills().unwrap(), 0);
        cg.remove().unwrap();
        let _ = std::fs::remove_dir(root.join("wharf-test"));
        assert!(cg.dirs().is_empty());
    }
}
