//! Images: records, references, unpack, import, load and save.
//!
//! An image is its config blob (the id is `sha256:` + its digest), a manifest blob and its
//! layer blobs in the content store, one snapshot per layer (keyed by chain id), and a record
//! in the `images` table; names live in the `tags` table as full references
//! (`docker.io/library/busybox:latest` -> id). Every change to the store happens under one
//! lock and lands in meta as one batch; blobs and snapshots a failed change created are
//! removed again, so a refused archive leaves the store as it was.
//!
//! An image removed with force while a stopped container still uses it keeps its record,
//! marked `removed`: it is invisible to names and lists, but its layers stay until no
//! container uses it (checked on the next remove or prune).

mod archive;
mod commit;
pub mod config;
mod import;
pub(crate) mod lease;
pub mod oci;
pub(crate) mod pulled;
pub mod reference;
mod remove;
mod unpack;

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use wharf_api::models;

use crate::content::{ContentError, ContentStore, Digest, HashingReader, Staged};
use crate::error::ErrorKind;
use crate::meta::{Meta, MetaError, Table};
use crate::snapshot::{SnapshotError, Snapshots};
pub use config::{ConfigDoc, Empty, History, ImageConfig};
use oci::Descriptor;
pub use reference::Reference;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("No such image: {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("invalid reference format: {0}")]
    InvalidReference(String),
    #[error("{0}")]
    Invalid(String),
    #[error("invalid archive: {}", archive_words(.0))]
    BadArchive(String),
    #[error("refusing layer: {0}")]
    HostileLayer(String),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("image metadata")]
    Meta(#[from] MetaError),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// What a tar reader's complaint says to a person. The tar crate quotes a bad header's raw
/// bytes ("numeric field was not a number: <bytes> when getting cksum for <bytes>"), which for
/// a file that is not a tar at all prints the file's first 512 bytes.
fn archive_words(message: &str) -> String {
    if let Some(at) = message.find("when getting cksum") {
        let prefix = message[..at]
            .split_once("tar: ")
            .map(|(before, _)| format!("{before}tar: "))
            .unwrap_or_default();
        return format!("{prefix}not a tar archive (a header's checksum is not a number)");
    }
    const MAX: usize = 300;
    let mut clean: String = message
        .chars()
        .map(|c| {
            if c.is_control() || c == '\u{fffd}' {
                '?'
            } else {
                c
            }
        })
        .collect();
    if clean.len() > MAX {
        let mut end = MAX;
        while !clean.is_char_boundary(end) {
            end -= 1;
        }
        clean.truncate(end);
        clean.push_str("...");
    }
    clean
}

impl ImageError {
    /// How the API reports this error: 404, 409, 400 or 500.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ImageError::NotFound(_) => ErrorKind::NotFound,
            ImageError::Conflict(_) => ErrorKind::Conflict,
            ImageError::InvalidReference(_)
            | ImageError::Invalid(_)
            | ImageError::BadArchive(_)
            | ImageError::HostileLayer(_)
            | ImageError::Content(ContentError::Mismatch { .. })
            | ImageError::Content(ContentError::InvalidDigest(_)) => ErrorKind::Invalid,
            _ => ErrorKind::Internal,
        }
    }
}

pub(crate) fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

/// Whether containers use an image, as the daemon knows: `Running` when any running container
/// does, else `Stopped` when any other container does (with one such container's id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InUse {
    No,
    Stopped(String),
    Running(String),
}

/// One layer of an image as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LayerRecord {
    /// The layer blob as loaded (tar, tar+gzip or tar+zstd).
    pub blob: Descriptor,
    pub diff_id: String,
    pub chain_id: String,
    /// Bytes of file content in the unpacked layer.
    pub size: u64,
}

/// The value of an `images` row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    pub id: String,
    pub manifest: Descriptor,
    pub config_size: u64,
    pub layers: Vec<LayerRecord>,
    pub doc: ConfigDoc,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tag_time: Option<String>,
    /// Removed by the user but kept for a container that still uses its layers.
    #[serde(default)]
    pub removed: bool,
}

impl ImageRecord {
    fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    fn id_hex(&self) -> &str {
        self.id.strip_prefix("sha256:").unwrap_or(&self.id)
    }
}

/// An image as the daemon and the container code see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// `sha256:<hex>`, the digest of the config blob.
    pub id: String,
    /// `busybox:latest`, in Docker's short form.
    pub repo_tags: Vec<String>,
    /// `busybox@sha256:...`.
    pub repo_digests: Vec<String>,
    pub config: ImageConfig,
    /// RFC 3339, as the config blob says (None when it says nothing).
    pub created: Option<String>,
    /// Bytes of all layers, unpacked.
    pub size: u64,
    pub architecture: String,
    pub os: String,
    pub(crate) record: ImageRecord,
}

impl Image {
    /// Seconds since the epoch of `created` (0 when unknown).
    pub fn created_unix(&self) -> i64 {
        self.created
            .as_deref()
            .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
            .map_or(0, |t| t.timestamp())
    }

    /// The digest of the manifest this image was stored with.
    pub fn manifest_digest(&self) -> &str {
        &self.record.manifest.digest
    }

    pub fn diff_ids(&self) -> Vec<String> {
        self.record
            .layers
            .iter()
            .map(|l| l.diff_id.clone())
            .collect()
    }

    pub fn labels(&self) -> HashMap<String, String> {
        self.config.labels.clone().unwrap_or_default()
    }
}

/// `sha256:<hex>` chain id of a layer on top of `parent`.
pub(crate) fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => Digest::of(format!("{p} {diff_id}").as_bytes()),
    }
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

pub struct ImageStore {
    meta: Arc<Meta>,
    content: ContentStore,
    snapshots: Snapshots,
    /// `<root>/content/leases`: what unfinished pulls keep from garbage collection.
    leases: PathBuf,
    /// Serialises every change to the store (reads go straight to meta).
    lock: Mutex<()>,
}

/// Blobs and snapshots a change created: removed again when the change fails.
#[derive(Default)]
pub(crate) struct Created {
    pub snapshots: Vec<Digest>,
    pub blobs: Vec<Digest>,
}

impl ImageStore {
    /// Opens the store under `root` (`<root>/content`, `<root>/snapshots`), removing what an
    /// interrupted change left behind.
    pub fn open(root: &Path, meta: Arc<Meta>) -> Result<ImageStore, ImageError> {
        let store = ImageStore {
            meta,
            content: ContentStore::open(&root.join("content"))?,
            snapshots: Snapshots::open(&root.join("snapshots"))?,
            leases: root.join("content").join("leases"),
            lock: Mutex::new(()),
        };
        std::fs::create_dir_all(&store.leases).map_err(io_ctx("creating the lease directory"))?;
        store.restore_snapshots()?;
        store.collect_garbage()?;
        Ok(store)
    }

    /// Waits until every committed snapshot is on disk (a daemon shutting down, tests).
    pub fn wait_synced(&self) {
        self.snapshots.wait_settled();
    }

    /// Unpacks again, from their blobs, the layers whose snapshots `Snapshots::open` dropped
    /// (committed but never synced before the machine went down).
    fn restore_snapshots(&self) -> Result<(), ImageError> {
        for record in self.records()? {
            let mut parent: Option<Digest> = None;
            for layer in &record.layers {
                let chain = Digest::parse(&layer.chain_id)?;
                if !self.snapshots.exists(&chain) {
                    let blob = Digest::parse(&layer.blob.digest)?;
                    let diff_id = Digest::parse(&layer.diff_id)?;
                    if !self.content.contains(&blob) {
                        tracing::warn!(image = %record.id, layer = %layer.chain_id, "a layer has neither snapshot nor blob");
                        break;
                    }
                    tracing::info!(layer = %layer.chain_id, "unpacking a layer again");
                    let mut created = Created::default();
                    self.ensure_layer(
                        &self.content.path(&blob),
                        Some(&diff_id),
                        parent.as_ref(),
                        false,
                        &mut created,
                    )?;
                }
                parent = Some(chain);
            }
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // A panic in another change cannot leave meta half-written (batches are atomic), so
        // the lock stays usable.
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn records(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self
            .meta
            .list::<ImageRecord>(Table::Images)?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// All tags: (full reference key, image id).
    fn tags(&self) -> Result<Vec<(String, String)>, ImageError> {
        Ok(self.meta.list::<String>(Table::Tags)?)
    }

    fn image(&self, record: ImageRecord, tags: &[(String, String)]) -> Image {
        let mut repo_tags = Vec::new();
        let mut repo_digests = Vec::new();
        for (key, id) in tags {
            if *id != record.id {
                continue;
            }
            if let Ok(r) = Reference::parse(key) {
                if r.digest.is_some() {
                    repo_digests.push(r.familiar());
                } else {
                    repo_tags.push(r.familiar());
                }
            }
        }
        Image {
            id: record.id.clone(),
            repo_tags,
            repo_digests,
            config: record.doc.config.clone().unwrap_or_default(),
            created: record.doc.created.clone(),
            size: record.size(),
            architecture: record.doc.architecture.clone().unwrap_or_default(),
            os: record.doc.os.clone().unwrap_or_default(),
            record,
        }
    }

    fn visible(&self, id: &str) -> Result<Option<ImageRecord>, ImageError> {
        Ok(self
            .meta
            .get::<ImageRecord>(Table::Images, id)?
            .filter(|r| !r.removed))
    }

    /// Finds the record `name` means: a full or short id, or a reference.
    fn resolve_record(&self, name: &str) -> Result<ImageRecord, ImageError> {
        if let Some(hex) = name.strip_prefix("sha256:") {
            if crate::content::is_hex64(hex) {
                return self
                    .visible(name)?
                    .ok_or_else(|| ImageError::NotFound(name.to_string()));
            }
            return self.by_prefix(hex, name);
        }
        let mut shown = name.to_string();
        if let Ok(r) = Reference::parse(name) {
            let r = r.with_default_tag();
            shown = r.familiar();
            if let Some(id) = self.meta.get::<String>(Table::Tags, &r.key())?
                && let Some(rec) = self.visible(&id)?
            {
                return Ok(rec);
            }
            if let Some(d) = &r.digest
                && let Some(rec) = self
                    .records()?
                    .into_iter()
                    .find(|rec| !rec.removed && rec.manifest.digest == d.as_str())
            {
                return Ok(rec);
            }
        }
        if !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return self.by_prefix(name, &shown);
        }
        Err(ImageError::NotFound(shown))
    }

    fn by_prefix(&self, hex: &str, shown: &str) -> Result<ImageRecord, ImageError> {
        let mut found = self
            .records()?
            .into_iter()
            .filter(|r| !r.removed && r.id_hex().starts_with(hex));
        match (found.next(), found.next()) {
            (Some(r), None) => Ok(r),
            (Some(_), Some(_)) => Err(ImageError::Invalid(format!(
                "multiple IDs found with provided prefix: {hex}"
            ))),
            _ => Err(ImageError::NotFound(shown.to_string())),
        }
    }

    /// The image `name` means: `busybox`, `busybox:latest`, `docker.io/library/busybox`,
    /// `localhost:5000/x:y`, `name@sha256:<manifest digest>`, `sha256:<id>`, the id's hex or
    /// any unique prefix of it.
    pub fn resolve(&self, name: &str) -> Result<Image, ImageError> {
        let record = self.resolve_record(name)?;
        Ok(self.image(record, &self.tags()?))
    }

    /// Every image, newest first.
    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        let tags = self.tags()?;
        let mut images: Vec<Image> = self
            .records()?
            .into_iter()
            .filter(|r| !r.removed)
            .map(|r| self.image(r, &tags))
            .collect();
        images.sort_by(|a, b| {
            b.created_unix()
                .cmp(&a.created_unix())
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(images)
    }

    /// Names `source`'s image `target` too (moving `target` if it named another image).
    pub fn tag(&self, source: &str, target: &str) -> Result<(), ImageError> {
        let _g = self.lock();
        let mut record = self.resolve_record(source)?;
        let r = Reference::parse(target)?;
        if r.digest.is_some() {
            return Err(ImageError::Invalid(
                "refusing to create a tag with a digest reference".into(),
            ));
        }
        let r = r.with_default_tag();
        record.last_tag_time = Some(now());
        self.meta.apply(vec![
            crate::meta::Change::put(Table::Tags, r.key(), &record.id)?,
            crate::meta::Change::put(Table::Images, record.id.clone(), &record)?,
        ])?;
        Ok(())
    }

    /// The snapshot directories of `image`'s layers, top layer first (overlay's lowerdir
    /// order).
    pub fn lower_dirs(&self, image: &Image) -> Result<Vec<PathBuf>, ImageError> {
        self.lower_dirs_of(&image.record)
    }

    /// Each layer of `image` as (chain id, unpacked bytes), base first.
    pub fn layer_sizes(&self, image: &Image) -> Vec<(String, u64)> {
        image
            .record
            .layers
            .iter()
            .map(|l| {
                let size = Digest::parse(&l.chain_id)
                    .map(|chain| self.snapshots.size(&chain))
                    .unwrap_or(0);
                (l.chain_id.clone(), size)
            })
            .collect()
    }

    /// The same by image id, for a container whose image was removed (with force) after
    /// the container was created.
    pub fn lower_dirs_by_id(&self, id: &str) -> Result<Vec<PathBuf>, ImageError> {
        let record = self
            .meta
            .get::<ImageRecord>(Table::Images, id)?
            .ok_or_else(|| ImageError::NotFound(id.to_string()))?;
        self.lower_dirs_of(&record)
    }

    fn lower_dirs_of(&self, record: &ImageRecord) -> Result<Vec<PathBuf>, ImageError> {
        let mut out = Vec::new();
        for layer in record.layers.iter().rev() {
            let chain = Digest::parse(&layer.chain_id)?;
            if !self.snapshots.exists(&chain) {
                return Err(ImageError::Io {
                    context: format!("layer {} of image {}", layer.chain_id, short(&record.id)),
                    source: io::ErrorKind::NotFound.into(),
                });
            }
            out.push(self.snapshots.fs_dir(&chain));
        }
        Ok(out)
    }

    /// What `docker image inspect` shows.
    pub fn inspect(&self, image: &Image) -> models::ImageInspect {
        let doc = &image.record.doc;
        let mut data = HashMap::new();
        if let Ok(dirs) = self.lower_dirs(image)
            && let Some((top, rest)) = dirs.split_first()
        {
            data.insert("UpperDir".to_string(), top.display().to_string());
            if !rest.is_empty() {
                let lowers: Vec<String> = rest.iter().map(|d| d.display().to_string()).collect();
                data.insert("LowerDir".to_string(), lowers.join(":"));
            }
        }
        models::ImageInspect {
            id: Some(image.id.clone()),
            repo_tags: Some(image.repo_tags.clone()),
            repo_digests: Some(image.repo_digests.clone()),
            comment: Some(doc.comment.clone().unwrap_or_default()),
            created: image.created.clone(),
            author: Some(doc.author.clone().unwrap_or_default()),
            config: Some(image.config.to_api()),
            architecture: Some(image.architecture.clone()),
            variant: doc.variant.clone(),
            os: Some(image.os.clone()),
            os_version: doc.os_version.clone(),
            size: Some(image.size as i64),
            graph_driver: Some(models::DriverData {
                name: "overlay2".into(),
                data,
            }),
            root_fs: Some(models::ImageInspectRootFs {
                typ: "layers".into(),
                layers: Some(image.diff_ids()),
            }),
            metadata: Some(models::ImageInspectMetadata {
                last_tag_time: Some(
                    image
                        .record
                        .last_tag_time
                        .clone()
                        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
                ),
            }),
            ..Default::default()
        }
    }

    /// One row of `GET /images/json`.
    pub fn summary(&self, image: &Image) -> models::ImageSummary {
        models::ImageSummary {
            id: image.id.clone(),
            parent_id: String::new(),
            repo_tags: image.repo_tags.clone(),
            repo_digests: image.repo_digests.clone(),
            created: image.created_unix(),
            size: image.size as i64,
            shared_size: -1,
            labels: image.labels(),
            containers: -1,
            manifests: None,
            descriptor: None,
        }
    }

    /// `docker history`: newest first, one row per history entry.
    pub fn history(&self, name: &str) -> Result<Vec<models::ImageHistoryResponseItem>, ImageError> {
        let image = self.resolve(name)?;
        let rec = &image.record;
        let unix = |c: &Option<String>| {
            c.as_deref()
                .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                .map_or(0, |t| t.timestamp())
        };
        let mut rows = Vec::new();
        let mut layers = rec.layers.iter();
        let history = if rec.doc.history.is_empty() {
            rec.layers.iter().map(|_| History::default()).collect()
        } else {
            rec.doc.history.clone()
        };
        for h in &history {
            let size = if h.empty_layer.unwrap_or(false) {
                0
            } else {
                layers.next().map_or(0, |l| l.size)
            };
            rows.push(models::ImageHistoryResponseItem {
                id: "<missing>".into(),
                created: unix(&h.created),
                created_by: h.created_by.clone().unwrap_or_default(),
                tags: Vec::new(),
                size: size as i64,
                comment: h.comment.clone().unwrap_or_default(),
            });
        }
        rows.reverse();
        if let Some(top) = rows.first_mut() {
            top.id = image.id.clone();
            top.tags = image.repo_tags.clone();
        }
        Ok(rows)
    }

    /// Makes sure the layer in `blob` is unpacked as the snapshot on top of `parent`.
    /// `expected` is the diff id the config promises (None for import, where the layer
    /// defines it). Returns the layer's record fields (diff id, chain id, size).
    pub(crate) fn ensure_layer(
        &self,
        blob: &Path,
        expected: Option<&Digest>,
        parent: Option<&Digest>,
        verify_existing: bool,
        created: &mut Created,
    ) -> Result<(Digest, Digest, u64), ImageError> {
        if let Some(d) = expected {
            let chain = chain_id(parent, d);
            if self.snapshots.exists(&chain) {
                if verify_existing {
                    let actual = layer_diff_id(blob)?;
                    if actual != *d {
                        return Err(diff_mismatch(d, &actual));
                    }
                }
                let size = self.snapshots.size(&chain);
                return Ok((d.clone(), chain, size));
            }
        }
        let tmp = self.snapshots.prepare()?;
        let mut file = File::open(blob).map_err(io_ctx(format!("opening {}", blob.display())))?;
        let unpacked = unpack::unpack(&mut file, &tmp.fs())?;
        if let Some(d) = expected
            && unpacked.diff_id != *d
        {
            return Err(diff_mismatch(d, &unpacked.diff_id));
        }
        let chain = chain_id(parent, &unpacked.diff_id);
        if tmp.commit(&self.snapshots, &chain, unpacked.size)? {
            created.snapshots.push(chain.clone());
        }
        let size = self.snapshots.size(&chain);
        Ok((unpacked.diff_id, chain, size))
    }

    /// Commits staged blobs into the content store, noting which ones are new.
    pub(crate) fn commit_blobs(
        &self,
        staged: Vec<Staged>,
        created: &mut Created,
    ) -> Result<(), ImageError> {
        for s in staged {
            let digest = s.digest().clone();
            if s.commit()? {
                created.blobs.push(digest);
            }
        }
        Ok(())
    }

    /// Undoes what a failed change created.
    pub(crate) fn roll_back(&self, created: Created) {
        for chain in created.snapshots {
            let _ = self.snapshots.remove(&chain);
        }
        for blob in created.blobs {
            let _ = self.content.delete(&blob);
        }
    }
}

fn diff_mismatch(expected: &Digest, actual: &Digest) -> ImageError {
    ImageError::BadArchive(format!(
        "layer content has diff id {actual}, the image config says {expected}"
    ))
}

/// The diff id of a layer blob, without unpacking it.
fn layer_diff_id(blob: &Path) -> Result<Digest, ImageError> {
    let file = File::open(blob).map_err(io_ctx(format!("opening {}", blob.display())))?;
    let mut buffered = io::BufReader::new(file);
    let head = io::BufRead::fill_buf(&mut buffered)
        .map_err(io_ctx("reading layer"))?
        .to_vec();
    let decoder: Box<dyn io::Read> = match unpack::Compression::detect(&head) {
        unpack::Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        unpack::Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(io_ctx("starting zstd decoder"))?,
        ),
        unpack::Compression::None => Box::new(buffered),
    };
    let (digest, _) = HashingReader::new(decoder)
        .finish()
        .map_err(|e| ImageError::BadArchive(format!("layer stream: {e}")))?;
    Ok(digest)
}

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_errors_do_not_quote_raw_headers() {
        let raw = "layer tar: numeric field was not a number: \u{1}\u{fffd}zz when getting cksum for hello world";
        assert_eq!(
            ImageError::BadArchive(raw.into()).to_string(),
            "invalid archive: layer tar: not a tar archive (a header's checksum is not a number)"
        );
        let long = format!("tar: {}\u{7}", "x".repeat(1000));
        let shown = ImageError::BadArchive(long).to_string();
        assert!(shown.len() < 330 && shown.ends_with("...") && !shown.contains('\u{7}'));
        assert_eq!(
            ImageError::BadArchive("tar: failed to read entire block".into()).to_string(),
            "invalid archive: tar: failed to read entire block"
        );
    }

    #[test]
    fn store_is_shareable_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<ImageStore>();
        shareable::<Image>();
    }

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        assert_eq!(chain_id(None, &a), a);
        let ab = chain_id(Some(&a), &b);
        assert_eq!(ab, Digest::of(format!("{a} {b}").as_bytes()));
        assert_ne!(ab, chain_id(Some(&b), &a));
    }

    #[test]
    fn error_kinds_map_to_statuses() {
        assert_eq!(ImageError::NotFound("x".into()).kind(), ErrorKind::NotFound);
        assert_eq!(ImageError::Conflict("x".into()).kind(), ErrorKind::Conflict);
        assert_eq!(
            ImageError::HostileLayer("x".into()).kind(),
            ErrorKind::Invalid
        );
        assert_eq!(
            ImageError::BadArchive("x".into()).kind(),
            ErrorKind::Invalid
        );
        let io = ImageError::Io {
            context: "x".into(),
            source: io::ErrorKind::Other.into(),
        };
        assert_eq!(io.kind(), ErrorKind::Internal);
    }
}
