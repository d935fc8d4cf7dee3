//! The builder wired to the engine: RUN steps as the engine's own containers (create,
//! attach, start, wait, take the overlay upper directory, remove), base images pulled with
//! the engine's registry client, and `commit` of a container.
//!
//! The builder is synchronous (its stages run on plain threads); the runner bridges to the
//! async engine with the runtime's handle, which is allowed from any thread that is not one
//! of the runtime's workers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use tokio::io::AsyncReadExt;
use tokio::runtime::Handle;
use wharf_api::models::{ContainerCreateBody, HostConfig};

use super::commit::{CommitOptions, commit_container};
use super::{BuildError, Puller, RunDone, RunMount, RunSpec, Runner};
use crate::container::{AttachStreams, ContainerError, Status, WaitCondition};
use crate::error::chain;
use crate::image::{Image, ImageConfig};
use crate::{Engine, snapshot};

/// The label that marks a RUN step's container; a daemon that died mid-build leaves such
/// containers behind, and the next start removes them.
pub const BUILD_LABEL: &str = "wharf.build-step";

/// Files and directories the runtime mounts into every container: when the image lacks
/// them, the runtime makes empty ones in the upper directory, which must not become part of
/// a layer.
const RUNTIME_MOUNT_POINTS: &[&str] = &[
    "/proc",
    "/dev",
    "/sys",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/resolv.conf",
];

/// The RUN runner over `engine`'s containers.
pub(crate) fn runner(engine: Weak<Engine>, handle: Handle) -> Arc<Runner> {
    Arc::new(move |spec: &RunSpec, out: &mut dyn FnMut(&[u8])| {
        let Some(engine) = engine.upgrade() else {
            return Err("the engine is shutting down".to_string());
        };
        run_step(&engine, &handle, spec, out)
    })
}

/// Base images a build lacks (or, with `--pull`, wants fresh) come through the engine's
/// registry client, with the stored credentials.
pub(crate) fn puller(engine: Weak<Engine>, handle: Handle) -> Arc<Puller> {
    Arc::new(move |reference: &str| {
        let Some(engine) = engine.upgrade() else {
            return Err("the engine is shutting down".to_string());
        };
        let reference = reference.to_string();
        let pull = async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel(64);
            let pulling = async move {
                engine
                    .distribution
                    .pull(&reference, None, None, &tx)
                    .await
                    .map(|_| ())
            };
            // The progress has no reader here; draining it keeps the pull going.
            let draining = async { while rx.recv().await.is_some() {} };
            tokio::join!(pulling, draining).0
        };
        handle
            .block_on(handle.spawn(pull))
            .map_err(|e| format!("the pull task failed: {e}"))?
            .map_err(|e| chain(&e))
    })
}

/// A read-write bind mount: writes land in an overlay over the source and are thrown away
/// with it, as BuildKit does, so a RUN never changes the context or a stage.
struct RwView {
    dir: PathBuf,
}

impl RwView {
    fn new(engine: &Engine, source: &Path) -> Result<(RwView, PathBuf), String> {
        let dir = engine
            .cfg
            .root
            .join("build/tmp")
            .join(format!("rwbind-{}", crate::content::random_name()));
        let view = RwView { dir };
        let (upper, work, merged) = (
            view.dir.join("upper"),
            view.dir.join("work"),
            view.dir.join("merged"),
        );
        if source.is_dir() {
            for d in [&upper, &work, &merged] {
                std::fs::create_dir_all(d).map_err(|e| format!("making {}: {e}", d.display()))?;
            }
            snapshot::mount_overlay(&[source.to_path_buf()], &upper, &work, &merged)
                .map_err(|e| chain(&e))?;
        } else {
            std::fs::create_dir_all(&view.dir)
                .map_err(|e| format!("making {}: {e}", view.dir.display()))?;
            std::fs::copy(source, &merged)
                .map_err(|e| format!("copying {}: {e}", source.display()))?;
        }
        Ok((view, merged))
    }
}

impl Drop for RwView {
    fn drop(&mut self) {
        let _ = snapshot::unmount(&self.dir.join("merged"));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Paths (relative, no leading `/`) the container's mounts need that the image lacks,
/// parents before children.
fn missing_mount_points(lowers: &[PathBuf], targets: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in targets {
        let Some(comps) = super::tree::components(t) else {
            continue;
        };
        for n in 1..=comps.len() {
            let p = comps[..n].join("/");
            if !out.contains(&p) && super::tree::lookup(lowers, &p).is_none() {
                out.push(p);
            }
        }
    }
    out
}

/// Removes from `upper` the mount points the runtime made, when the step left them empty,
/// and then the directories of the image that were copied up only to hold them.
fn remove_mount_stubs(upper: &Path, lowers: &[PathBuf], stubs: &[String]) {
    use std::os::unix::fs::MetadataExt;
    let mut parents: Vec<&str> = Vec::new();
    for rel in stubs.iter().rev() {
        let p = upper.join(rel);
        if let Some((parent, _)) = rel.rsplit_once('/')
            && !stubs.iter().any(|s| s == parent)
            && !parents.contains(&parent)
        {
            parents.push(parent);
        }
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            // Fails, as it should, when the step put something there.
            let _ = std::fs::remove_dir(&p);
        } else if meta.is_file() && meta.len() == 0 {
            let _ = std::fs::remove_file(&p);
        }
    }
    parents.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for rel in parents {
        let p = upper.join(rel);
        let (Ok(up), Some((_, low))) = (
            std::fs::symlink_metadata(&p),
            super::tree::lookup(lowers, rel),
        ) else {
            continue;
        };
        let same = up.is_dir()
            && low.is_dir()
            && up.mode() == low.mode()
            && (up.uid(), up.gid()) == (low.uid(), low.gid());
        let empty = std::fs::read_dir(&p).is_ok_and(|mut d| d.next().is_none());
        let opaque = xattr::get(&p, "trusted.overlay.opaque").is_ok_and(|v| v.is_some());
        if same && empty && !opaque {
            let _ = std::fs::remove_dir(&p);
        }
    }
}

fn run_step(
    engine: &Arc<Engine>,
    handle: &Handle,
    spec: &RunSpec,
    out: &mut dyn FnMut(&[u8]),
) -> Result<RunDone, String> {
    let lowers = engine
        .images
        .lower_dirs_by_id(&spec.image)
        .map_err(|e| chain(&e))?;
    let mut targets: Vec<String> = RUNTIME_MOUNT_POINTS.iter().map(|s| s.to_string()).collect();
    targets.extend(spec.mounts.iter().map(|m| m.target.clone()));
    let stubs = missing_mount_points(&lowers, &targets);

    let mut views = Vec::new();
    let mut binds = Vec::new();
    let mut tmpfs = HashMap::new();
    let cache_dir = engine.cfg.root.join("build/mounts");
    for RunMount {
        kind,
        source,
        target,
        readonly,
    } in &spec.mounts
    {
        match (kind.as_str(), source) {
            ("tmpfs", _) => {
                tmpfs.insert(target.clone(), "exec".to_string());
            }
            ("bind", Some(src)) => {
                let src = if !readonly && !src.starts_with(&cache_dir) {
                    let (view, merged) = RwView::new(engine, src)?;
                    views.push(view);
                    merged
                } else {
                    src.clone()
                };
                let ro = if *readonly { ":ro" } else { "" };
                binds.push(format!("{}:{target}{ro}", src.display()));
            }
            (other, _) => return Err(format!("mount type {other} is not supported")),
        }
    }
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(spec.argv.clone()),
        // Empty: the argv is the whole command, the image's entrypoint takes no part.
        entrypoint: Some(Vec::new()),
        env: Some(spec.env.clone()),
        user: Some(spec.user.clone()),
        working_dir: Some(spec.workdir.clone()),
        labels: Some(HashMap::from([(BUILD_LABEL.to_string(), "1".to_string())])),
        host_config: Some(HostConfig {
            network_mode: Some(spec.network.clone()),
            binds: (!binds.is_empty()).then_some(binds),
            tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = handle
        .block_on(engine.create(None, body))
        .map_err(|e| chain(&e))?
        .id;
    let remove = {
        let engine = engine.clone();
        let handle = handle.clone();
        let id = id.clone();
        move || {
            if let Err(e) = handle.block_on(engine.remove(&id, true, false)) {
                tracing::warn!(container = %id, error = %chain(&e), "removing a build container");
            }
            drop(views);
        }
    };
    // The output callback may block (it feeds the client), which is not allowed inside
    // the runtime: the container runs as a task and its output comes back over a channel.
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let task = handle.spawn(run_container(engine.clone(), id.clone(), tx));
    for chunk in rx {
        out(&chunk);
    }
    let result = handle.block_on(task).unwrap_or_else(|e| {
        Err(ContainerError::StartFailed(format!(
            "the build step's task failed: {e}"
        )))
    });
    match result {
        Ok(exit_code) => {
            let upper = engine.container_paths(&id).upper();
            remove_mount_stubs(&upper, &lowers, &stubs);
            Ok(RunDone {
                exit_code,
                upper,
                cleanup: Box::new(remove),
            })
        }
        Err(e) => {
            remove();
            Err(chain(&e))
        }
    }
}

/// Starts container `id`, its output sent to `out`; returns its exit code.
async fn run_container(
    engine: Arc<Engine>,
    id: String,
    out: std::sync::mpsc::Sender<Vec<u8>>,
) -> Result<i64, ContainerError> {
    let id = id.as_str();
    let (_, attach) = engine.attach(
        id,
        AttachStreams {
            stdin: false,
            stdout: true,
            stderr: true,
        },
    )?;
    let exited = engine.wait(id, WaitCondition::NextExit)?;
    engine.start(id).await?;
    let mut stream = attach.await?;
    // Docker's multiplexed frames: [stream, 0, 0, 0, length (u32, big endian)] + payload.
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        loop {
            if pending.len() < 8 {
                break;
            }
            let len = u32::from_be_bytes([pending[4], pending[5], pending[6], pending[7]]) as usize;
            if pending.len() < 8 + len {
                break;
            }
            let _ = out.send(pending[8..8 + len].to_vec());
            pending.drain(..8 + len);
        }
    }
    Ok(exited.await)
}

impl Engine {
    /// The builder behind `POST /build`.
    pub fn builder(&self) -> &Arc<super::Builder> {
        &self.builder
    }

    /// Removes the RUN containers a build that was cut short (a killed daemon) left.
    pub(crate) async fn remove_build_leftovers(self: &Arc<Self>) {
        let leftovers: Vec<String> = self
            .registry()
            .all()
            .iter()
            .filter_map(|c| {
                let r = c.record();
                let labels = r.config.labels.as_ref()?;
                labels.contains_key(BUILD_LABEL).then(|| r.id.clone())
            })
            .collect();
        for id in leftovers {
            if let Err(e) = self.remove(&id, true, false).await {
                tracing::warn!(container = %id, error = %chain(&e), "removing a build container left by an interrupted build");
            }
        }
    }

    /// `docker commit`: the container's changes as a layer on its image, with the
    /// container's config (overlaid by `opts.config` where that sets a field) and `changes`
    /// applied. A running container is frozen meanwhile when `pause` is set.
    pub async fn commit(
        self: &Arc<Self>,
        key: &str,
        mut opts: CommitOptions,
        pause: bool,
    ) -> Result<Image, BuildError> {
        let c = self.registry().lookup(key)?;
        let (id, image_id, status, config) = {
            let r = c.record();
            (
                r.id.clone(),
                r.image_id.clone(),
                r.state.status,
                r.config.clone(),
            )
        };
        if matches!(status, Status::Removing | Status::Dead) {
            return Err(
                ContainerError::Conflict(format!("container {id} is being removed")).into(),
            );
        }
        let mut base: ImageConfig = serde_json::to_value(&config)
            .and_then(serde_json::from_value)
            .map_err(|e| BuildError::Invalid(format!("the container's config: {e}")))?;
        if let Some(user) = opts.config.take() {
            overlay_config(&mut base, user);
        }
        opts.config = Some(base);
        let freeze = pause && status == Status::Running;
        if freeze {
            self.pause(&id).await?;
        }
        let images = self.images.clone();
        let rw = self.container_paths(&id).upper();
        let result =
            tokio::task::spawn_blocking(move || commit_container(&images, &image_id, &rw, &opts))
                .await
                .unwrap_or_else(|e| {
                    Err(BuildError::Invalid(format!("the commit task failed: {e}")))
                });
        if freeze {
            self.unpause(&id).await?;
        }
        result
    }
}

/// Fields the request's config sets replace the container's, as Docker merges them.
fn overlay_config(base: &mut ImageConfig, user: ImageConfig) {
    macro_rules! take {
        ($($f:ident),*) => {$(
            if user.$f.is_some() {
                base.$f = user.$f;
            }
        )*};
    }
    take!(
        user,
        exposed_ports,
        env,
        entrypoint,
        cmd,
        volumes,
        working_dir,
        labels,
        stop_signal,
        healthcheck,
        on_build,
        shell
    );
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn mount_points_missing_from_the_image_are_found_and_removed_when_left_empty() {
        let lower = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(lower.path().join("etc")).unwrap();
        std::fs::write(lower.path().join("etc/hosts"), "x").unwrap();
        std::fs::create_dir_all(lower.path().join("srv")).unwrap();
        let missing = missing_mount_points(
            &[lower.path().to_path_buf()],
            &[
                "/srv/m".into(),
                "/etc/hosts".into(),
                "/etc/resolv.conf".into(),
                "/run/secrets/tok".into(),
                "/cache".into(),
            ],
        );
        assert_eq!(
            missing,
            vec![
                "srv/m",
                "etc/resolv.conf",
                "run",
                "run/secrets",
                "run/secrets/tok",
                "cache"
            ]
        );
        let upper = tempfile::tempdir().unwrap();
        let u = upper.path();
        std::fs::create_dir_all(u.join("run/secrets")).unwrap();
        std::fs::write(u.join("run/secrets/tok"), "").unwrap();
        std::fs::create_dir_all(u.join("etc")).unwrap();
        std::fs::write(u.join("etc/resolv.conf"), "").unwrap();
        // The step wrote into the cache mount point's directory: it stays.
        std::fs::create_dir_all(u.join("cache")).unwrap();
        std::fs::write(u.join("cache/kept"), "k").unwrap();
        // The step changed the mode of a directory that held a mount point: it stays.
        std::fs::create_dir_all(u.join("srv/m")).unwrap();
        std::fs::set_permissions(u.join("srv"), std::fs::Permissions::from_mode(0o700)).unwrap();
        remove_mount_stubs(u, &[lower.path().to_path_buf()], &missing);
        assert!(!u.join("run").exists());
        assert!(!u.join("etc/resolv.conf").exists());
        // Copied up only to hold a mount point: gone too.
        assert!(!u.join("etc").exists());
        assert!(u.join("cache/kept").exists());
        assert!(u.join("srv").is_dir() && !u.join("srv/m").exists());
    }

    #[test]
    fn a_commit_config_overlays_only_what_it_sets() {
        let mut base = ImageConfig {
            cmd: Some(vec!["sh".into()]),
            env: Some(vec!["A=1".into()]),
            ..Default::default()
        };
        overlay_config(
            &mut base,
            ImageConfig {
                cmd: Some(vec!["top".into()]),
                ..Default::default()
            },
        );
        assert_eq!(base.cmd, Some(vec!["top".to_string()]));
        assert_eq!(base.env, Some(vec!["A=1".to_string()]));
    }
}
