//! The Dockerfile builder.
//!
//! `parse` turns the text into stages of steps (a pure function). `build` picks the stages the
//! target needs, runs independent ones in parallel threads, and runs each step against the
//! stage's state (config + layers): metadata instructions edit the config, COPY/ADD write a
//! deterministic layer tar from the context or another stage, RUN goes through a [`Runner`]
//! (the engine's container path) and takes the container's overlay upper directory as the
//! layer. Every step's result is cached under a key over its parent's key, the instruction
//! after expansion and the digests of what it reads; the cache lives in
//! `<root>/build/cache/` and its layers are kept by leases (`buildcache-<image>` for each
//! built image, `build-<random>` while a build runs), so it survives daemon restarts and
//! `image prune` keeps what tagged images need.

pub mod api;
pub mod commit;
pub mod ignore;
pub mod layer;
pub mod parse;
pub(crate) mod run;
pub mod shell;
mod step;
pub mod tree;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::content::Digest;
use crate::error::ErrorKind;
use crate::image::config::{ConfigDoc, host_arch};
use crate::image::{ImageError, ImageStore, LayerRecord, Reference};

pub use parse::{Dockerfile, parse};
pub use run::BUILD_LABEL;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("dockerfile parse error on line {line}: {msg}")]
    Syntax { line: usize, msg: String },
    #[error("line {line}: {msg}")]
    Step { line: usize, msg: String },
    #[error("{0}")]
    Invalid(String),
    #[error("build context: {0}")]
    Context(String),
    #[error("{0}")]
    NotFound(String),
    #[error("line {line}: the command exited with code {code}: {cmd}")]
    RunFailed { line: usize, code: i64, cmd: String },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Container(#[from] crate::container::ContainerError),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl BuildError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            BuildError::Syntax { .. }
            | BuildError::Step { .. }
            | BuildError::Invalid(_)
            | BuildError::Context(_)
            | BuildError::RunFailed { .. } => ErrorKind::Invalid,
            BuildError::NotFound(_) => ErrorKind::NotFound,
            BuildError::Image(e) => e.kind(),
            BuildError::Container(e) => e.kind(),
            BuildError::Io { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> BuildError {
        BuildError::Io {
            context: context.into(),
            source,
        }
    }

    /// The Dockerfile line the error is about, when there is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            BuildError::Syntax { line, .. }
            | BuildError::Step { line, .. }
            | BuildError::RunFailed { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// Where the Dockerfile comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerfileSource {
    /// A path relative to the context (`Dockerfile` by default).
    Path(String),
    /// The text itself (`-f -`).
    Inline(String),
}

impl Default for DockerfileSource {
    fn default() -> Self {
        DockerfileSource::Path("Dockerfile".into())
    }
}

/// What `docker build` asks for.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub dockerfile: DockerfileSource,
    pub tags: Vec<String>,
    /// `--build-arg NAME=VALUE` (a None value: the variable is declared unset).
    pub build_args: HashMap<String, Option<String>>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub pull: bool,
    /// Labels added to the final image.
    pub labels: HashMap<String, String>,
    /// Network mode for RUN: `default`, `host`, `none`.
    pub network: Option<String>,
    /// `os/arch[/variant]`: only this machine's platform is built.
    pub platform: Option<String>,
    /// Secrets for `RUN --mount=type=secret,id=...`: id -> content.
    pub secrets: HashMap<String, Vec<u8>>,
    /// Clamps file times and sets creation times, for reproducible images.
    pub source_date_epoch: Option<i64>,
}

/// Progress of a build, in step order per stage (stages may interleave).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A step starts: `n` of `total`, with the stage's name or index and its own numbering.
    Step {
        n: usize,
        total: usize,
        stage: String,
        stage_step: usize,
        stage_steps: usize,
        text: String,
    },
    /// The step's result came from the cache.
    Cached { n: usize },
    /// Output of a RUN step.
    Output { n: usize, text: String },
    /// The step finished.
    Done { n: usize, elapsed: Duration },
    /// Something worth telling the user (ignored `# syntax`, unused build args...).
    Note(String),
}

/// The result of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub id: String,
    /// Docker's short names of the tags given.
    pub tags: Vec<String>,
}

/// A bind or tmpfs mount for a RUN container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMount {
    /// `bind` or `tmpfs`.
    pub kind: String,
    pub source: Option<PathBuf>,
    pub target: String,
    pub readonly: bool,
}

/// One RUN: a container from `image` running `argv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// An image made of the stage's current state (removed after the step).
    pub image: String,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub user: String,
    pub workdir: String,
    /// `default`, `host` or `none`.
    pub network: String,
    pub mounts: Vec<RunMount>,
}

/// What a finished RUN container left.
pub struct RunDone {
    pub exit_code: i64,
    /// The container's overlay upper directory: the step's layer.
    pub upper: PathBuf,
    /// Removes the container (and its mount) once the layer is taken.
    pub cleanup: Box<dyn FnOnce() + Send>,
}

/// Runs one RUN container, streaming its output to the callback. The runner removes what
/// it made when it fails; on success `RunDone::cleanup` does.
pub type Runner = dyn Fn(&RunSpec, &mut dyn FnMut(&[u8])) -> Result<RunDone, String> + Send + Sync;

/// Fetches a base image that is not in the store (or, with `--pull`, a newer one).
pub type Puller = dyn Fn(&str) -> Result<(), String> + Send + Sync;

/// A stage's state: its image config and layers, and the cache key chain so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pub doc: ConfigDoc,
    pub layers: Vec<LayerRecord>,
}

pub struct Builder {
    images: Arc<ImageStore>,
    dir: PathBuf,
    runner: Option<Arc<Runner>>,
    puller: Option<Arc<Puller>>,
    hashes: tree::HashCache,
    /// Image records made for RUN containers, with how many steps use each.
    step_images: Mutex<HashMap<String, usize>>,
}

/// What stages wait on: each needed stage's result once it has one.
type Results = (
    Mutex<HashMap<usize, Result<(State, String), String>>>,
    Condvar,
);

impl Builder {
    /// A builder keeping its state under `<root>/build`.
    pub fn new(images: Arc<ImageStore>, root: &Path) -> Result<Builder, BuildError> {
        let dir = root.join("build");
        for d in [dir.join("cache"), dir.join("tmp"), dir.join("mounts")] {
            std::fs::create_dir_all(&d)
                .map_err(|e| BuildError::io(format!("creating {}", d.display()), e))?;
        }
        // Scratch left by an interrupted build: views may still be mounted.
        if let Ok(rd) = std::fs::read_dir(dir.join("tmp")) {
            for e in rd.flatten() {
                let p = e.path();
                if let Ok(inner) = std::fs::read_dir(&p) {
                    for i in inner.flatten() {
                        let _ = crate::snapshot::unmount(&i.path());
                    }
                }
                let _ = crate::snapshot::unmount(&p);
                let _ = std::fs::remove_dir_all(&p);
            }
        }
        let hashes = tree::HashCache::load(&dir.join("filehashes"));
        Ok(Builder {
            images,
            dir,
            runner: None,
            puller: None,
            hashes,
            step_images: Mutex::new(HashMap::new()),
        })
    }

    /// Wires RUN to the engine's containers.
    pub fn with_runner(mut self, runner: Arc<Runner>) -> Builder {
        self.runner = Some(runner);
        self
    }

    /// Wires base image pulls to the registry client.
    pub fn with_puller(mut self, puller: Arc<Puller>) -> Builder {
        self.puller = Some(puller);
        self
    }

    /// Extracts a context tar (what `POST /build` receives) into a scratch directory under
    /// the builder's root, removed when the returned guard drops.
    pub fn extract_context(&self, tar: &mut dyn Read) -> Result<ScratchDir, BuildError> {
        let dir = ScratchDir::new(&self.dir.join("tmp"), "ctx")?;
        let mut archive = tar::Archive::new(tar);
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_unpack_xattrs(false);
        let entries = archive
            .entries()
            .map_err(|e| BuildError::Context(format!("reading the context tar: {e}")))?;
        for entry in entries {
            let mut entry =
                entry.map_err(|e| BuildError::Context(format!("reading the context tar: {e}")))?;
            let path = entry.path_bytes().into_owned();
            let name = String::from_utf8_lossy(&path).to_string();
            if name.starts_with('/') || name.split('/').any(|c| c == "..") {
                return Err(BuildError::Context(format!(
                    "the context tar has an entry outside its root: {name}"
                )));
            }
            if matches!(
                entry.header().entry_type(),
                tar::EntryType::Char | tar::EntryType::Block
            ) {
                continue;
            }
            entry
                .unpack_in(dir.path())
                .map_err(|e| BuildError::Context(format!("extracting {name}: {e}")))?;
        }
        Ok(dir)
    }

    /// Builds the Dockerfile in `context` (None: no context, `-` with a Dockerfile only).
    pub fn build(
        &self,
        context: Option<&Path>,
        opts: &BuildOptions,
        events: &(dyn Fn(Event) + Sync),
    ) -> Result<Built, BuildError> {
        if let Some(p) = &opts.platform {
            check_platform(p)?;
        }
        let mut tags = Vec::new();
        for t in &opts.tags {
            let r = Reference::parse(t)?;
            if r.digest.is_some() {
                return Err(BuildError::Invalid(format!(
                    "invalid tag {t:?}: a tag can not carry a digest"
                )));
            }
            tags.push(r.with_default_tag());
        }
        let empty = ScratchDir::new(&self.dir.join("tmp"), "noctx")?;
        let ctx_dir = context.unwrap_or(empty.path());
        let text = match &opts.dockerfile {
            DockerfileSource::Inline(t) => t.clone(),
            DockerfileSource::Path(p) => {
                let Some(comps) = tree::components(p) else {
                    return Err(BuildError::Context(format!(
                        "the Dockerfile {p} is outside the build context"
                    )));
                };
                let path = ctx_dir.join(comps.join("/"));
                std::fs::read_to_string(&path).map_err(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        BuildError::Context(format!(
                            "cannot find the Dockerfile {p} in the build context"
                        ))
                    } else {
                        BuildError::io(format!("reading {p}"), e)
                    }
                })?
            }
        };
        let df = parse(&text)?;
        if let Some(s) = &df.syntax {
            events(Event::Note(format!(
                "# syntax={s} ignored: wharf builds with its own frontend"
            )));
        }
        let context = tree::Tree::context(ctx_dir)?;
        let plan = step::plan(&df, opts)?;
        let lease = format!("build-{}", crate::content::random_name());
        let scratch = ScratchDir::new(&self.dir.join("tmp"), "run")?;
        let result = self.run_plan(&df, &plan, &context, opts, &lease, scratch.path(), events);
        self.hashes.save();
        let (state, all_layers) = match result {
            Ok(v) => v,
            Err(e) => {
                // The steps that succeeded stay cached while the lease lasts (a day).
                return Err(e);
            }
        };
        for unused in plan.unused_args(opts) {
            events(Event::Note(format!(
                "[Warning] One or more build-args [{unused}] were not consumed"
            )));
        }
        let mut doc = state.doc.clone();
        if !opts.labels.is_empty() {
            let config = doc.config.get_or_insert_with(Default::default);
            let labels = config.labels.get_or_insert_with(HashMap::new);
            for (k, v) in &opts.labels {
                labels.insert(k.clone(), v.clone());
            }
        }
        let image = self.images.commit_built(&doc, &state.layers, &tags)?;
        let keep = format!("buildcache-{}", image.id.trim_start_matches("sha256:"));
        self.images.lease_layers(&keep, &all_layers)?;
        self.images.drop_lease(&lease);
        self.sweep();
        Ok(Built {
            id: image.id.clone(),
            tags: tags.iter().map(Reference::familiar).collect(),
        })
    }

    /// Drops the cache leases of images that no longer exist.
    fn sweep(&self) {
        for name in self.images.lease_names() {
            if let Some(hex) = name.strip_prefix("buildcache-")
                && !self.images.has_record(&format!("sha256:{hex}"))
            {
                self.images.drop_lease(&name);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run_plan(
        &self,
        df: &Dockerfile,
        plan: &step::Plan,
        context: &tree::Tree,
        opts: &BuildOptions,
        lease: &str,
        scratch: &Path,
        events: &(dyn Fn(Event) + Sync),
    ) -> Result<(State, Vec<LayerRecord>), BuildError> {
        let results: Results = (Mutex::new(HashMap::new()), Condvar::new());
        let first_error: Mutex<Option<BuildError>> = Mutex::new(None);
        std::thread::scope(|s| {
            for &i in &plan.order {
                let results = &results;
                let first_error = &first_error;
                s.spawn(move || {
                    let r =
                        self.run_stage(df, plan, i, context, opts, lease, scratch, events, results);
                    let mut map = results.0.lock().unwrap_or_else(|e| e.into_inner());
                    match r {
                        Ok(v) => {
                            map.insert(i, Ok(v));
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            let mut fe = first_error.lock().unwrap_or_else(|e| e.into_inner());
                            if fe.is_none()
                                && !matches!(e, BuildError::Invalid(ref m) if m == DEP_FAILED)
                            {
                                *fe = Some(e);
                            }
                            map.insert(i, Err(msg));
                        }
                    }
                    results.1.notify_all();
                });
            }
        });
        if let Some(e) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        let map = results.0.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut all = Vec::new();
        let mut seen = HashSet::new();
        for (st, _) in map.values().flatten() {
            for l in &st.layers {
                if seen.insert(l.chain_id.clone()) {
                    all.push(l.clone());
                }
            }
        }
        match map.get(&plan.target) {
            Some(Ok((st, _))) => Ok((st.clone(), all)),
            _ => Err(BuildError::Invalid(
                "the target stage did not finish".into(),
            )),
        }
    }

    /// Waits for stage `i`'s result.
    fn wait_stage(results: &Results, i: usize) -> Result<(State, String), BuildError> {
        let mut map = results.0.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = map.get(&i) {
                return r
                    .clone()
                    .map_err(|_| BuildError::Invalid(DEP_FAILED.into()));
            }
            map = results.1.wait(map).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Reads a cache entry whose layers are all still present.
    fn cache_get(&self, key: &str) -> Option<State> {
        let raw = std::fs::read(self.dir.join("cache").join(key)).ok()?;
        let st: State = serde_json::from_slice(&raw).ok()?;
        self.images.layers_present(&st.layers).then_some(st)
    }

    fn cache_put(&self, key: &str, st: &State) {
        let dir = self.dir.join("cache");
        let Ok(raw) = serde_json::to_vec(st) else {
            return;
        };
        let tmp = dir.join(format!("tmp-{}", crate::content::random_name()));
        if std::fs::write(&tmp, raw).is_ok() && std::fs::rename(&tmp, dir.join(key)).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

const DEP_FAILED: &str = "a stage this one needs failed";

fn check_platform(p: &str) -> Result<(), BuildError> {
    let host = format!("linux/{}", host_arch());
    let norm = p.trim().to_ascii_lowercase();
    let ok = norm == host || norm == "linux" || (host == "linux/amd64" && norm == "linux/x86_64");
    if ok {
        Ok(())
    } else {
        Err(BuildError::Invalid(format!(
            "platform {p} is not supported: wharf builds only for this machine's platform ({host})"
        )))
    }
}

/// sha256 hex of the parts, separated so that no two part lists hash alike.
pub(crate) fn key_of(parts: &[&str]) -> String {
    let mut s = String::new();
    for p in parts {
        s.push_str(&p.len().to_string());
        s.push(':');
        s.push_str(p);
    }
    Digest::of(s.as_bytes()).hex().to_string()
}

/// A directory under the builder's scratch space, removed (after unmounting what is under
/// it) when dropped.
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn new(base: &Path, what: &str) -> Result<ScratchDir, BuildError> {
        let path = base.join(format!("{what}-{}", crate::content::random_name()));
        std::fs::create_dir_all(&path)
            .map_err(|e| BuildError::io(format!("creating {}", path.display()), e))?;
        Ok(ScratchDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir(&self.path) {
            for e in rd.flatten() {
                let _ = crate::snapshot::unmount(&e.path());
            }
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Arguments in scope, in declaration order (None: declared without a value).
pub(crate) type Args = BTreeMap<String, Option<String>>;
