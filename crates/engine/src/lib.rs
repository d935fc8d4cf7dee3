//! The engine: images, containers, their state. Knows nothing of HTTP; the daemon calls it.

pub mod build;
pub mod container;
pub mod content;
pub mod df;
pub mod distribution;
pub mod error;
pub mod image;
mod images;
pub mod meta;
pub mod network;
pub mod snapshot;
pub mod util;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

pub use container::{ContainerError, ContainerRecord, Status};
pub use error::ErrorKind;
pub use image::{ImageError, ImageStore};

use container::Registry;
use meta::Meta;

/// Where the engine keeps its state.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Persistent state: metadata, content, snapshots, container files.
    pub root: PathBuf,
    /// Runtime state: sockets, pids, exit records. Lost on reboot, kept across daemon restarts.
    pub run: PathBuf,
    /// The cgroup under which every container's cgroup is made.
    pub cgroup_parent: String,
    /// The default bridge and the address pool.
    pub network: network::NetworkOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("creating state directory {path}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Meta(#[from] meta::MetaError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    #[error(transparent)]
    Distribution(#[from] distribution::DistributionError),
    #[error(transparent)]
    Build(#[from] build::BuildError),
}

/// The one entry point to images and containers.
pub struct Engine {
    pub cfg: EngineConfig,
    pub images: Arc<ImageStore>,
    /// The registry client: pull, push, login.
    pub distribution: distribution::Distribution,
    meta: Arc<Meta>,
    containers: Mutex<Registry>,
    pub networks: network::Networks,
    execs: Mutex<HashMap<String, Arc<container::exec::ExecInstance>>>,
    builder: Arc<build::Builder>,
    /// Container directories made ahead of creates.
    spare_dirs: container::SpareDirs,
}

impl Engine {
    /// Opens the state under `cfg` and reconnects to the containers that are still running.
    pub async fn open(cfg: EngineConfig) -> Result<Arc<Engine>, EngineError> {
        for dir in [cfg.root.join("containers"), cfg.run.join("containers")] {
            std::fs::create_dir_all(&dir).map_err(|source| EngineError::StateDir {
                path: dir.clone(),
                source,
            })?;
        }
        // Container directories come and go as snapshots do: the same ext4 placement.
        snapshot::mark_top_dir(&cfg.root.join("containers"));
        let meta = Arc::new(Meta::open(&cfg.root.join("meta.redb"))?);
        let images = Arc::new(ImageStore::open(&cfg.root, meta.clone())?);
        let networks = network::Networks::open(cfg.network.clone(), meta.clone()).await?;
        let distribution = distribution::Distribution::new(images.clone(), &cfg.root)?;
        let builder = build::Builder::new(images.clone(), &cfg.root)?;
        let handle = tokio::runtime::Handle::current();
        let spare_dirs = container::SpareDirs::new(cfg.root.join("containers"));
        let engine = Arc::new_cyclic(|weak| Engine {
            spare_dirs,
            cfg,
            images,
            distribution,
            meta,
            containers: Mutex::new(Registry::default()),
            networks,
            execs: Mutex::new(HashMap::new()),
            builder: Arc::new(
                builder
                    .with_runner(build::run::runner(weak.clone(), handle.clone()))
                    .with_puller(build::run::puller(weak.clone(), handle)),
            ),
        });
        let ready = async {
            // `recover` sweeps the root's container directories against the records.
            container::sweep(&engine.cfg.run.join("containers"), None);
            engine.recover().await?;
            engine.remove_build_leftovers().await;
            engine.networks.sync(&engine.live_veths()).await?;
            Ok::<(), EngineError>(())
        }
        .await;
        if let Err(e) = ready {
            // A start that fails leaves no bridges or rules behind (unless containers run).
            engine.shutdown().await;
            return Err(e);
        }
        Ok(engine)
    }

    /// Called when the daemon stops: with no container running, the host's network state
    /// (bridges, firewall rules, name servers) goes; a later start makes it again.
    pub async fn shutdown(&self) {
        let running = self
            .registry()
            .all()
            .iter()
            .any(|c| c.record().state.status.is_running());
        if !running {
            self.networks.shutdown().await;
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // The registry holds plain maps; a panic while it was held cannot leave it torn.
        self.containers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn container_paths(&self, id: &str) -> container::ContainerPaths {
        container::ContainerPaths {
            dir: self.cfg.root.join("containers").join(id),
            run_dir: self.cfg.run.join("containers").join(id),
        }
    }

    /// Counts for `docker info`: (total, running, paused, stopped).
    pub fn container_counts(&self) -> (usize, usize, usize, usize) {
        let all = self.registry().all();
        let (mut running, mut paused, mut stopped) = (0, 0, 0);
        for c in &all {
            match c.record().state.status {
                Status::Running | Status::Restarting => running += 1,
                Status::Paused => paused += 1,
                _ => stopped += 1,
            }
        }
        (all.len(), running, paused, stopped)
    }
}
