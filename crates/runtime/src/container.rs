//! Init containers (create, start, kill, delete, pause, resume) and tenant processes (exec).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container as YoukiContainer, ContainerStatus};
use libcontainer::signal::Signal as YoukiSignal;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::Signal;
use oci_spec::runtime::Spec;
use std::sync::Arc;

use crate::direct::DirectInit;
use crate::executor::WharfExecutor;
use crate::seccomp::{self, Program};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime's own words, flattened from its error chain.
    #[error("{0}")]
    Runtime(String),
    #[error("container {0} does not exist")]
    NotFound(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// libcontainer's own cleanup after a failed create can lose the race with the exiting init
/// (rmdir of a cgroup is EBUSY until its tasks are gone); finish it so nothing is left.
fn clean_failed_create(bundle: &Path, state_root: &Path, id: &str) {
    let cgroups_path = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
        .and_then(|spec| spec["linux"]["cgroupsPath"].as_str().map(String::from));
    if let Some(path) = cgroups_path {
        crate::cgroup::Cgroup::system(path).kill_and_remove();
    }
    let _ = std::fs::remove_dir_all(state_root.join(id));
}

impl RuntimeError {
    fn from_youki(e: &dyn std::error::Error) -> RuntimeError {
        RuntimeError::Runtime(flatten(e))
    }
}

/// Joins an error and its sources with ": ", dropping links that only repeat the next one
/// (libcontainer wraps many errors transparently) or say nothing ("oci spec error" and the like
/// stay, they are short).
fn flatten(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            // A wrapper whose text embeds its source's text: keep only the longer one.
            if let Some(last) = parts.last()
                && text.contains(last.as_str())
            {
                parts.pop();
            }
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// The container's standard streams.
pub enum Stdio {
    /// The fds the container's process gets as 0, 1 and 2; `None` keeps the caller's own.
    Fds {
        stdin: Option<OwnedFd>,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    },
    /// A pty: libcontainer connects to the unix socket at this path (which the caller listens
    /// on) and sends the pty master over it (SCM_RIGHTS).
    Console(PathBuf),
}

/// What [`Container::create`] needs.
pub struct InitOptions<'a> {
    pub id: &'a str,
    /// Holds `config.json`.
    pub bundle: &'a Path,
    /// libcontainer's state root; the container's state lives in `<state_root>/<id>`.
    pub state_root: &'a Path,
    pub stdio: Stdio,
}

/// What [`exec`] needs.
pub struct ExecOptions<'a> {
    pub id: &'a str,
    pub state_root: &'a Path,
    /// A JSON file holding the OCI `process` to run.
    pub process: &'a Path,
    pub stdio: Stdio,
}

fn spec_of(bundle: &Path) -> Result<Spec, RuntimeError> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|source| RuntimeError::Io {
        context: format!("reading {}", path.display()),
        source,
    })?;
    serde_json::from_slice(&text)
        .map_err(|e| RuntimeError::Runtime(format!("{}: {e}", path.display())))
}

/// The precompiled seccomp program the spec names, read now: the container's init cannot
/// reach the host's files any more when it loads it.
fn seccomp_of(spec: &Spec) -> Result<Option<Arc<Program>>, RuntimeError> {
    seccomp::from_spec(spec)
        .map(|p| p.map(Arc::new))
        .map_err(|e| RuntimeError::from_youki(&e))
}

fn builder(
    id: &str,
    state_root: &Path,
    stdio: Stdio,
    seccomp: Option<Arc<Program>>,
) -> Result<ContainerBuilder, RuntimeError> {
    let b = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_executor(WharfExecutor { seccomp })
        .with_root_path(state_root)
        .map_err(|e| RuntimeError::from_youki(&e))?
        .validate_id()
        .map_err(|e| RuntimeError::from_youki(&e))?;
    Ok(match stdio {
        Stdio::Fds {
            stdin,
            stdout,
            stderr,
        } => {
            let mut b = b;
            if let Some(fd) = stdin {
                b = b.with_stdin(fd);
            }
            if let Some(fd) = stdout {
                b = b.with_stdout(fd);
            }
            if let Some(fd) = stderr {
                b = b.with_stderr(fd);
            }
            b
        }
        Stdio::Console(path) => b.with_console_socket(Some(path)),
    })
}

/// An init container known to libcontainer.
pub struct Container {
    inner: YoukiContainer,
    /// Set when the direct path made the init (see `crate::direct`): it, not libcontainer,
    /// lets the init exec.
    direct: Option<DirectInit>,
}

impl Container {
    /// Creates the container: namespaces, rootfs, cgroup, and an init process that waits for
    /// [`Container::start`] before it execs the workload. Blocks; clones the calling process,
    /// which must be single-threaded.
    pub fn create(opts: InitOptions<'_>) -> Result<Container, RuntimeError> {
        std::fs::create_dir_all(opts.state_root).map_err(|source| RuntimeError::Io {
            context: format!("creating {}", opts.state_root.display()),
            source,
        })?;
        let spec = spec_of(opts.bundle)?;
        let seccomp = seccomp_of(&spec)?;
        if crate::direct::unsupported(&spec).is_none() {
            let (init, inner) = crate::direct::create(
                opts.id,
                opts.bundle,
                opts.state_root,
                &spec,
                opts.stdio,
                seccomp,
            )?;
            return Ok(Container {
                inner,
                direct: Some(init),
            });
        }
        let built = builder(opts.id, opts.state_root, opts.stdio, seccomp)?
            .as_init(opts.bundle)
            .with_systemd(false)
            .with_detach(true)
            .build();
        match built {
            Ok(inner) => Ok(Container {
                inner,
                direct: None,
            }),
            Err(e) => {
                let err = RuntimeError::from_youki(&e);
                clean_failed_create(opts.bundle, opts.state_root, opts.id);
                Err(err)
            }
        }
    }

    /// Loads a container libcontainer knows from its state.
    pub fn load(state_root: &Path, id: &str) -> Result<Container, RuntimeError> {
        let dir = state_root.join(id);
        if !dir.exists() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        let inner = YoukiContainer::load(dir).map_err(|e| RuntimeError::from_youki(&e))?;
        Ok(Container {
            inner,
            direct: None,
        })
    }

    pub fn id(&self) -> &str {
        self.inner.id()
    }

    /// The init process in the host's pid namespace.
    pub fn pid(&self) -> Option<i32> {
        self.inner.pid().map(|p| p.as_raw())
    }

    /// Brings up `lo` in the container's network namespace when it has its own. Call from a
    /// single-threaded process: the calling thread enters that namespace and comes back.
    pub fn loopback_up(&self) -> Result<(), RuntimeError> {
        let pid = self
            .pid()
            .ok_or_else(|| RuntimeError::Runtime("the container has no pid".into()))?;
        let io = |context: &str| {
            let context = context.to_string();
            move |source| RuntimeError::Io {
                context: context.clone(),
                source,
            }
        };
        let theirs = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let ours = PathBuf::from("/proc/self/ns/net");
        if std::fs::read_link(&theirs).map_err(io("reading the container's netns"))?
            == std::fs::read_link(&ours).map_err(io("reading our netns"))?
        {
            return Ok(());
        }
        let home = std::fs::File::open(&ours).map_err(io("opening our netns"))?;
        let target = std::fs::File::open(&theirs).map_err(io("opening the container's netns"))?;
        nix::sched::setns(&target, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            RuntimeError::Io {
                context: "entering the container's netns".into(),
                source: e.into(),
            }
        })?;
        let result = crate::sys::loopback_up().map_err(io("bringing up lo"));
        nix::sched::setns(&home, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            RuntimeError::Io {
                context: "leaving the container's netns".into(),
                source: e.into(),
            }
        })?;
        result
    }

    /// Lets the init process exec the workload.
    pub fn start(&mut self) -> Result<(), RuntimeError> {
        match &self.direct {
            Some(init) => {
                init.start()?;
                self.inner
                    .set_status(ContainerStatus::Running)
                    .save()
                    .map_err(|e| RuntimeError::from_youki(&e))
            }
            None => self.inner.start().map_err(|e| RuntimeError::from_youki(&e)),
        }
    }

    /// Signals the init process, or with `all` every process in the container's cgroup.
    pub fn kill(&mut self, signal: Signal, all: bool) -> Result<(), RuntimeError> {
        self.inner
            .kill(YoukiSignal::from(signal), all)
            .map_err(|e| RuntimeError::from_youki(&e))
    }

    pub fn pause(&mut self) -> Result<(), RuntimeError> {
        self.inner.pause().map_err(|e| RuntimeError::from_youki(&e))
    }

    pub fn resume(&mut self) -> Result<(), RuntimeError> {
        self.inner
            .resume()
            .map_err(|e| RuntimeError::from_youki(&e))
    }

    /// Whether libcontainer sees the container as stopped (its init is gone).
    pub fn is_stopped(&mut self) -> bool {
        self.inner.refresh_status().is_ok() && self.inner.status() == ContainerStatus::Stopped
    }

    /// Removes the container's cgroup and libcontainer's state; `force` kills what still runs.
    pub fn delete(&mut self, force: bool) -> Result<(), RuntimeError> {
        self.inner
            .delete(force)
            .map_err(|e| RuntimeError::from_youki(&e))
    }

    /// Removes libcontainer's state directory: what [`Container::delete`] leaves to do once the
    /// init has exited and the caller has removed the cgroup itself (wharf's specs carry no
    /// poststop hooks). Skips `delete`'s status refresh and its cgroup manager rebuild.
    pub fn remove_state(&self) -> Result<(), RuntimeError> {
        match std::fs::remove_dir_all(&self.inner.root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RuntimeError::Io {
                context: format!("removing {}", self.inner.root.display()),
                source,
            }),
        }
    }

    /// The container's cgroup path (`linux.cgroupsPath`), relative to each hierarchy's root.
    pub fn cgroup_path(&self) -> Result<PathBuf, RuntimeError> {
        let config = self
            .inner
            .spec()
            .map_err(|e| RuntimeError::from_youki(&e))?;
        Ok(config.cgroup_path)
    }
}

/// Starts `opts.process` inside the running container `opts.id` and returns its pid (in the
/// host's pid namespace). The process is not waited for: it is reparented to the nearest child
/// subreaper (the caller should be one). Blocks; clones the calling process.
pub fn exec(opts: ExecOptions<'_>) -> Result<i32, RuntimeError> {
    if !opts.state_root.join(opts.id).exists() {
        return Err(RuntimeError::NotFound(opts.id.to_string()));
    }
    let container = YoukiContainer::load(opts.state_root.join(opts.id))
        .map_err(|e| RuntimeError::from_youki(&e))?;
    let seccomp = seccomp_of(&spec_of(container.bundle())?)?;
    let pid = builder(opts.id, opts.state_root, opts.stdio, seccomp)?
        .as_tenant()
        .with_process(Some(opts.process))
        .with_detach(true)
        .build()
        .map_err(|e| RuntimeError::from_youki(&e))?;
    Ok(pid.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Leaf;
    impl std::fmt::Display for Leaf {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("exec: \"nope\": executable file not found in $PATH")
        }
    }
    impl std::error::Error for Leaf {}

    #[derive(Debug)]
    struct Wrap(&'static str, Leaf);
    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Wrap {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }

    #[test]
    fn error_chains_keep_the_runtime_words() {
        let e = Wrap("failed to create container", Leaf);
        assert_eq!(
            flatten(&e),
            "failed to create container: exec: \"nope\": executable file not found in $PATH"
        );
        let e = Wrap("exec: \"nope\": executable file not found in $PATH", Leaf);
        assert_eq!(
            flatten(&e),
            "exec: \"nope\": executable file not found in $PATH"
        );
    }

    #[test]
    fn loading_an_unknown_container_fails_cleanly() {
        let dir = std::env::temp_dir().join(format!("wharf-rt-{}", std::process::id()));
        assert!(matches!(
            Container::load(&dir, "nope"),
            Err(RuntimeError::NotFound(_))
        ));
        assert!(!dir.exists());
    }
}
