//! Containers: records, the status state machine, and one file per lifecycle verb.
//!
//! Every verb takes the container's `op` lock for its whole run, so two verbs on one
//! container never interleave; the status guards below decide which verbs may run.

pub mod shim;
pub mod spec;

mod attach;
mod create;
pub(crate) mod exec;
mod inspect;
mod kill;
mod list;
mod logs;
mod monitor;
mod names;
mod pause;
mod prune;
mod remove;
mod rename;
mod restart;
mod spare_dirs;
mod start;
mod stats;
mod stop;
mod top;
mod wait;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use wharf_api::models;

use crate::error::ErrorKind;

pub use attach::AttachFuture;
pub use exec::{ExecStart, ExecStream};
pub use list::Filters;
pub use logs::LogOptions;
pub(crate) use prune::dir_size;
pub(crate) use remove::sweep;
pub use shim::AttachStreams;
pub(crate) use spare_dirs::SpareDirs;
pub use wait::WaitCondition;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("No such container: {0}")]
    NotFound(String),
    #[error("No such exec instance: {0}")]
    ExecNotFound(String),
    #[error("multiple containers found with provided prefix: {0}")]
    Ambiguous(String),
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse { name: String, id: String },
    #[error("Invalid container name ({0}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    BadName(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("container already {0}")]
    NotModified(&'static str),
    #[error("{0}")]
    StartFailed(String),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error(transparent)]
    Shim(#[from] shim::ShimError),
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
    #[error(transparent)]
    Cgroup(#[from] wharf_runtime::cgroup::CgroupError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    #[error("container files")]
    Io(#[from] std::io::Error),
}

impl ContainerError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ContainerError::NotFound(_) | ContainerError::ExecNotFound(_) => ErrorKind::NotFound,
            ContainerError::NameInUse { .. } | ContainerError::Conflict(_) => ErrorKind::Conflict,
            ContainerError::Ambiguous(_)
            | ContainerError::BadName(_)
            | ContainerError::Invalid(_)
            | ContainerError::StartFailed(_) => ErrorKind::Invalid,
            ContainerError::NotModified(_) => ErrorKind::NotModified,
            ContainerError::Image(e) => e.kind(),
            ContainerError::Network(e) => e.kind(),
            ContainerError::Spec(_) | ContainerError::Shim(shim::ShimError::Start(_)) => {
                ErrorKind::Invalid
            }
            ContainerError::Snapshot(_)
            | ContainerError::Shim(_)
            | ContainerError::Meta(_)
            | ContainerError::Cgroup(_)
            | ContainerError::Io(_) => ErrorKind::Internal,
        }
    }
}

/// Where a container is in its life. Transitions are guarded by the methods below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }

    /// Whether a process of the container exists (it may be frozen).
    pub fn is_running(self) -> bool {
        matches!(self, Status::Running | Status::Paused)
    }

    fn guard_start(self) -> Result<(), ContainerError> {
        match self {
            Status::Created | Status::Exited | Status::Restarting => Ok(()),
            Status::Running => Err(ContainerError::NotModified("started")),
            Status::Paused => Err(ContainerError::Conflict(
                "cannot start a paused container, try unpause instead".into(),
            )),
            Status::Removing | Status::Dead => Err(ContainerError::Conflict(
                "container is marked for removal and cannot be started".into(),
            )),
        }
    }

    fn guard_signal(self, id: &str) -> Result<(), ContainerError> {
        match self {
            Status::Running | Status::Paused => Ok(()),
            _ => Err(ContainerError::Conflict(format!(
                "container {id} is not running"
            ))),
        }
    }

    fn guard_pause(self, id: &str) -> Result<(), ContainerError> {
        match self {
            Status::Running => Ok(()),
            Status::Paused => Err(ContainerError::Conflict(format!(
                "container {id} is already paused"
            ))),
            _ => Err(ContainerError::Conflict(format!(
                "container {id} is not running"
            ))),
        }
    }

    fn guard_unpause(self, id: &str) -> Result<(), ContainerError> {
        match self {
            Status::Paused => Ok(()),
            _ => Err(ContainerError::Conflict(format!(
                "container {id} is not paused"
            ))),
        }
    }

    fn guard_remove(self, id: &str, force: bool) -> Result<(), ContainerError> {
        match self {
            Status::Running | Status::Paused | Status::Restarting if !force => {
                Err(ContainerError::Conflict(format!(
                    "cannot remove container \"{id}\": container is {}: stop the container before removing or force remove",
                    self.as_str()
                )))
            }
            Status::Removing => Err(ContainerError::Conflict(format!(
                "removal of container {id} is already in progress"
            ))),
            _ => Ok(()),
        }
    }
}

/// The runtime state of a container, persisted with its record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    pub pid: u32,
    pub exit_code: i32,
    pub oom_killed: bool,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
}

/// A container as stored in metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    /// Without the leading slash Docker shows.
    pub name: String,
    pub created: String,
    /// The image as the user named it.
    pub image_ref: String,
    pub image_id: String,
    /// The image's config merged with the create options: what inspect shows as Config.
    pub config: models::ContainerConfig,
    pub host_config: models::HostConfig,
    pub path: String,
    pub args: Vec<String>,
    pub state: State,
    pub restart_count: i64,
    /// Set by stop and kill so restart policies leave the container alone.
    pub manually_stopped: bool,
    /// Warnings from building the runtime spec, reported once by create or start.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Network endpoints and, while running, addresses and published ports.
    #[serde(default)]
    pub network: crate::network::ContainerNetwork,
}

impl ContainerRecord {
    pub fn tty(&self) -> bool {
        self.config.tty.unwrap_or(false)
    }

    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }
}

/// What waiters watch: a counter of exits and whether the container is gone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lifecycle {
    pub exits: u64,
    pub last_exit_code: i32,
    pub removed: bool,
}

/// A live container in the daemon.
pub struct Container {
    record: Mutex<ContainerRecord>,
    /// Serialises the verbs on this container.
    pub(crate) op: tokio::sync::Mutex<()>,
    lifecycle: tokio::sync::watch::Sender<Lifecycle>,
    pending: attach::PendingAttaches,
    /// The delay before the next restart by policy; doubles on each quick failure.
    backoff: Mutex<std::time::Duration>,
}

impl Container {
    fn new(record: ContainerRecord) -> Arc<Container> {
        let (lifecycle, _) = tokio::sync::watch::channel(Lifecycle::default());
        Arc::new(Container {
            record: Mutex::new(record),
            op: tokio::sync::Mutex::new(()),
            lifecycle,
            pending: Default::default(),
            backoff: Mutex::new(std::time::Duration::ZERO),
        })
    }

    /// The record; never hold the guard across an await.
    pub fn record(&self) -> MutexGuard<'_, ContainerRecord> {
        // A panic while holding the lock leaves a record that is still valid data.
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> ContainerRecord {
        self.record().clone()
    }

    pub fn id(&self) -> String {
        self.record().id.clone()
    }
}

/// The containers the daemon knows, by id, with a name index.
#[derive(Default)]
pub struct Registry {
    by_id: HashMap<String, Arc<Container>>,
    names: HashMap<String, String>,
}

impl Registry {
    /// Finds a container by full id, then by name, then by a unique id prefix (Docker's order).
    pub fn lookup(&self, key: &str) -> Result<Arc<Container>, ContainerError> {
        if let Some(c) = self.by_id.get(key) {
            return Ok(c.clone());
        }
        let name = key.strip_prefix('/').unwrap_or(key);
        if let Some(id) = self.names.get(name)
            && let Some(c) = self.by_id.get(id)
        {
            return Ok(c.clone());
        }
        if !key.is_empty() && key.chars().all(|c| c.is_ascii_hexdigit()) {
            let mut found = self.by_id.iter().filter(|(id, _)| id.starts_with(key));
            if let Some((_, c)) = found.next() {
                if found.next().is_some() {
                    return Err(ContainerError::Ambiguous(key.to_string()));
                }
                return Ok(c.clone());
            }
        }
        Err(ContainerError::NotFound(key.to_string()))
    }

    pub fn all(&self) -> Vec<Arc<Container>> {
        self.by_id.values().cloned().collect()
    }

    pub fn name_owner(&self, name: &str) -> Option<&String> {
        self.names.get(name)
    }

    fn insert(&mut self, container: Arc<Container>) {
        let (id, name) = {
            let r = container.record();
            (r.id.clone(), r.name.clone())
        };
        self.names.insert(name, id.clone());
        self.by_id.insert(id, container);
    }

    fn remove(&mut self, id: &str) {
        if let Some(c) = self.by_id.remove(id) {
            let name = c.record().name.clone();
            self.names.remove(&name);
        }
    }

    fn rename(&mut self, id: &str, old: &str, new: &str) {
        self.names.remove(old);
        self.names.insert(new.to_string(), id.to_string());
    }
}

/// Paths of one container's files.
pub struct ContainerPaths {
    /// `<root>/containers/<id>`: the bundle, the overlay dirs, the log.
    pub dir: PathBuf,
    /// `<run>/containers/<id>`: the shim's socket, pid and exit record.
    pub run_dir: PathBuf,
}

impl ContainerPaths {
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("merged")
    }
    pub fn upper(&self) -> PathBuf {
        self.dir.join("rw")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("log.json")
    }
}

/// Validates a container name as Docker does.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_docker_rules() {
        assert!(valid_name("web-1"));
        assert!(valid_name("a.b_c"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("x"));
        assert!(!valid_name("a/b"));
    }

    #[test]
    fn guards() {
        assert!(Status::Running.guard_start().is_err());
        assert!(Status::Exited.guard_start().is_ok());
        assert!(Status::Running.guard_remove("x", false).is_err());
        assert!(Status::Running.guard_remove("x", true).is_ok());
        assert!(Status::Exited.guard_signal("x").is_err());
        assert!(Status::Paused.guard_unpause("x").is_ok());
    }
}
