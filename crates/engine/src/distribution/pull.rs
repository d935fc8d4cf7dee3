//! Pull: reference → manifest (through an index, choosing the platform) → config → layers.
//!
//! Each missing layer streams from the registry into a blocking task: one thread hashes the
//! blob and writes it to ingest (whole pieces with direct I/O, `content/direct.rs`) and
//! passes the same bytes on to the unpack into a temporary snapshot (`image/unpack.rs`:
//! inflate, diff-id hash, extraction and file content each on a thread of their own), so
//! download, decompression and unpack overlap; distinct layers run in parallel, bounded. Only a blob
//! that matches its digest and size and a snapshot whose diff id matches the config are
//! committed, each first added to the pull's lease. A pull that fails removes what it
//! created; one that is dropped or killed keeps it under the lease, and the next pull of the
//! same manifest finds it.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use oci_client::client::BlobResponse;
use tokio::sync::mpsc::{self, Sender};

use super::progress::{Progress, offer, send};
use super::{AuthConfig, Distribution, DistributionError, MAX_CONFIG, Remote};
use crate::content::{ContentError, Digest, Ingest};
use crate::image::config::{ConfigDoc, host_arch};
use crate::image::lease::Lease;
use crate::image::oci::{self, Descriptor, Index, Manifest};
use crate::image::pulled::{Pulled, chain_id, unpack};
use crate::image::{Created, Image, ImageError, ImageStore, LayerRecord, Reference};

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullResult {
    pub image: Image,
    /// The digest the reference resolved to in the registry (the index's, for an index).
    pub digest: String,
    /// The reference as Docker prints it (`busybox:latest`).
    pub reference: String,
    /// Whether the reference now names a different image (or anything was downloaded).
    pub updated: bool,
}

const ACCEPT: [&str; 4] = [
    oci::OCI_INDEX,
    oci::DOCKER_LIST,
    oci::OCI_MANIFEST,
    oci::DOCKER_MANIFEST,
];

/// How often a layer download that loses its connection is resumed.
const MAX_RETRIES: u32 = 3;

fn bad(msg: impl Into<String>) -> DistributionError {
    DistributionError::BadContent(msg.into())
}

pub(crate) enum Kind {
    Index(Index),
    Manifest(Manifest),
}

/// A manifest or index as the registry sent it, byte for byte.
pub(crate) struct Fetched {
    pub bytes: Bytes,
    pub digest: Digest,
    pub media_type: String,
    pub kind: Kind,
}

pub(crate) async fn fetch_manifest(
    remote: &Remote,
    r: &Reference,
) -> Result<Fetched, DistributionError> {
    let oci = remote.oci_ref(r.tag.as_deref(), r.digest.as_ref().map(Digest::as_str));
    fetch_manifest_at(remote, &oci, &r.familiar(), r.digest.as_ref()).await
}

async fn fetch_manifest_at(
    remote: &Remote,
    oci: &oci_client::Reference,
    shown: &str,
    expected: Option<&Digest>,
) -> Result<Fetched, DistributionError> {
    let reference = oci
        .digest()
        .or(oci.tag())
        .unwrap_or(crate::image::reference::DEFAULT_TAG);
    let bytes = remote.manifest(reference, &ACCEPT, shown).await?;
    let digest = Digest::of(&bytes);
    if let Some(e) = expected
        && *e != digest
    {
        return Err(bad(format!(
            "manifest for {shown} does not match its digest: expected {e}, got {digest}"
        )));
    }
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("manifest for {shown} is not JSON: {e}")))?;
    if value.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
        return Err(bad(format!(
            "manifest for {shown} is in the retired schema 1 format, which is not supported"
        )));
    }
    let media_type = match value.get("mediaType").and_then(|m| m.as_str()) {
        Some(m) => m.to_string(),
        None if value.get("manifests").is_some() => oci::OCI_INDEX.to_string(),
        None => oci::OCI_MANIFEST.to_string(),
    };
    let kind = if oci::is_index(&media_type) {
        Kind::Index(
            serde_json::from_value(value).map_err(|e| bad(format!("index for {shown}: {e}")))?,
        )
    } else if oci::is_manifest(&media_type) {
        Kind::Manifest(
            serde_json::from_value(value).map_err(|e| bad(format!("manifest for {shown}: {e}")))?,
        )
    } else {
        return Err(bad(format!(
            "manifest for {shown} has the unsupported media type {media_type}"
        )));
    };
    Ok(Fetched {
        bytes,
        digest,
        media_type,
        kind,
    })
}

/// Reads a small blob (a config) whole, checking its size and digest.
async fn fetch_small(
    remote: &Remote,
    desc: &Descriptor,
    what: &str,
) -> Result<Vec<u8>, DistributionError> {
    let digest = Digest::parse(&desc.digest)?;
    if desc.size > MAX_CONFIG {
        return Err(bad(format!(
            "{what} {digest} is {} bytes, over the {MAX_CONFIG}-byte limit",
            desc.size
        )));
    }
    let oci = remote.oci_ref(None, None);
    let mut stream = remote
        .client
        .pull_blob_stream(&oci, digest.as_str())
        .await
        .map_err(|e| remote.error(format!("{what} {digest}"), e))?;
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => {
                data.extend_from_slice(&b);
                if data.len() as u64 > desc.size {
                    return Err(bad(format!(
                        "{what} {digest} is larger than the {} bytes its descriptor says",
                        desc.size
                    )));
                }
            }
            // All bytes arrived: the digest check below says what is wrong, if anything.
            Err(_) if data.len() as u64 == desc.size => break,
            Err(e) => {
                return Err(DistributionError::Io {
                    context: format!("downloading {what} {digest}"),
                    source: e,
                });
            }
        }
    }
    if (data.len() as u64) < desc.size {
        return Err(bad(format!(
            "{what} {digest} is truncated: received {} of {} bytes",
            data.len(),
            desc.size
        )));
    }
    let actual = Digest::of(&data);
    if actual != digest {
        return Err(bad(format!(
            "{what} {digest} does not match its digest: got {actual}"
        )));
    }
    Ok(data)
}

/// The config blob (from the store when it has it) and its parsed form.
pub(crate) async fn fetch_config(
    remote: &Remote,
    store: &ImageStore,
    desc: &Descriptor,
) -> Result<(Vec<u8>, ConfigDoc), DistributionError> {
    let digest = Digest::parse(&desc.digest)?;
    let bytes = if store.content().contains(&digest) {
        store.content().read_blob(&digest)?
    } else {
        fetch_small(remote, desc, "image config").await?
    };
    let doc: ConfigDoc = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("image config {digest} is not JSON: {e}")))?;
    Ok((bytes, doc))
}

/// The platform a pull wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Want {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
    /// Asked for (as opposed to this machine's default).
    pub explicit: bool,
}

impl Want {
    pub fn parse(platform: Option<&str>) -> Result<Want, DistributionError> {
        let Some(p) = platform.map(str::trim).filter(|p| !p.is_empty()) else {
            return Ok(Want {
                os: "linux".into(),
                arch: host_arch().into(),
                variant: None,
                explicit: false,
            });
        };
        let parts: Vec<&str> = p.split('/').collect();
        let ok =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Want {
                os: os.to_ascii_lowercase(),
                arch: normalise_arch(arch),
                variant: None,
                explicit: true,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Want {
                os: os.to_ascii_lowercase(),
                arch: normalise_arch(arch),
                variant: Some(variant.to_ascii_lowercase()),
                explicit: true,
            }),
            _ => Err(DistributionError::Invalid(format!(
                "invalid platform {p:?}: expected os/arch[/variant]"
            ))),
        }
    }

    fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        os == self.os
            && normalise_arch(arch) == self.arch
            && self
                .variant
                .as_deref()
                .is_none_or(|v| variant == Some(v) || (v == "v8" && variant.is_none()))
    }

    fn text(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.arch),
            None => format!("{}/{}", self.os, self.arch),
        }
    }
}

fn normalise_arch(arch: &str) -> String {
    match arch.to_ascii_lowercase().as_str() {
        "x86_64" | "x86-64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        a => a.into(),
    }
}

/// The index entry for `want`: Docker's message when there is none.
fn choose<'a>(index: &'a Index, want: &Want) -> Result<&'a Descriptor, DistributionError> {
    index
        .manifests
        .iter()
        .filter(|d| d.annotation("vnd.docker.reference.type").is_none())
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| want.matches(&p.os, &p.architecture, p.variant.as_deref()))
        })
        .ok_or_else(|| {
            DistributionError::NotFound(format!(
                "no matching manifest for {} in the manifest list entries",
                want.text()
            ))
        })
}

/// A chunk of a download, or how it ended.
enum Msg {
    Data(Bytes),
    End,
    Fail(String),
}

/// What `unpack` reads of a download: the chunks `store_blob` passes on.
struct Feed {
    rx: std::sync::mpsc::Receiver<Msg>,
    buf: Bytes,
    ended: bool,
    failed: Option<String>,
}

impl Read for Feed {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            if self.ended {
                return Ok(0);
            }
            if let Some(f) = &self.failed {
                return Err(io::Error::other(f.clone()));
            }
            match self.rx.recv() {
                Ok(Msg::Data(b)) => self.buf = b,
                Ok(Msg::End) => self.ended = true,
                Ok(Msg::Fail(m)) => self.failed = Some(m),
                Err(_) => self.failed = Some("the download was interrupted".into()),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

/// What `store_blob` made of a download.
struct Stored {
    ingest: Ingest,
    received: u64,
    failed: Option<String>,
    /// Writing to ingest failed: a local problem, not the registry's.
    write_failed: Option<io::Error>,
}

/// The blob's side of a download, on a thread of its own beside the unpack (which has the
/// longest job): every byte is counted, hashed and written to ingest, then passed on to the
/// unpack. Once the unpack has stopped, the rest is still stored: its digest tells whether
/// the registry sent the wrong bytes.
fn store_blob(
    mut rx: mpsc::Receiver<Msg>,
    mut ingest: Ingest,
    limit: u64,
    tx: std::sync::mpsc::SyncSender<Msg>,
) -> Stored {
    let (mut received, mut failed, mut write_failed) = (0u64, None, None);
    let mut forward = Some(tx);
    loop {
        let msg = match rx.blocking_recv() {
            Some(Msg::Data(b)) => {
                received += b.len() as u64;
                if received > limit {
                    Msg::Fail("more bytes than the descriptor says".into())
                } else if let Err(e) = ingest.write_all(&b) {
                    let m = format!("writing the blob: {e}");
                    write_failed = Some(e);
                    Msg::Fail(m)
                } else {
                    Msg::Data(b)
                }
            }
            Some(Msg::End) => Msg::End,
            Some(Msg::Fail(m)) => Msg::Fail(m),
            None => Msg::Fail("the download was interrupted".into()),
        };
        let last = match &msg {
            Msg::Data(_) => false,
            Msg::End => true,
            Msg::Fail(m) => {
                failed = Some(m.clone());
                true
            }
        };
        if let Some(t) = &forward
            && t.send(msg).is_err()
        {
            forward = None;
        }
        if last {
            break;
        }
    }
    Stored {
        ingest,
        received,
        failed,
        write_failed,
    }
}

/// What the layer tasks of one pull share.
struct Ctx {
    store: Arc<ImageStore>,
    remote: Arc<Remote>,
    progress: Sender<Progress>,
    lease: Arc<Lease>,
    created: Arc<Mutex<Created>>,
    stop: Arc<AtomicBool>,
    diff_ids: Vec<Digest>,
    chains: Vec<Digest>,
}

/// One distinct layer blob and the positions in the image where it sits.
struct Job {
    desc: Descriptor,
    digest: Digest,
    positions: Vec<usize>,
    present: bool,
}

fn note(created: &Mutex<Created>, f: impl FnOnce(&mut Created)) {
    f(&mut created.lock().unwrap_or_else(|e| e.into_inner()));
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DistributionError> + Send + 'static,
) -> Result<T, DistributionError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DistributionError::Io {
            context: "layer task".into(),
            source: io::Error::other(e.to_string()),
        })?
}

/// Receives a layer blob and unpacks it on the way; commits both once verified.
fn ingest_and_unpack(
    ctx: &Ctx,
    rx: mpsc::Receiver<Msg>,
    digest: &Digest,
    size: u64,
    position: usize,
) -> Result<(), DistributionError> {
    let store = &ctx.store;
    let (diff_id, chain) = (&ctx.diff_ids[position], &ctx.chains[position]);
    let ingest = store.content().ingest()?;
    let tmp = store.snapshots().prepare().map_err(ImageError::from)?;
    let (tx, feed_rx) = std::sync::mpsc::sync_channel::<Msg>(16);
    let (unpacked, stored) = std::thread::scope(|scope| {
        let storing = std::thread::Builder::new()
            .name("blob-store".into())
            .spawn_scoped(scope, move || store_blob(rx, ingest, size, tx))
            .map_err(|e| DistributionError::Io {
                context: "starting the blob writer".into(),
                source: e,
            })?;
        let mut feed = Feed {
            rx: feed_rx,
            buf: Bytes::new(),
            ended: false,
            failed: None,
        };
        let unpacked = unpack(&mut feed, &tmp.fs());
        // The blob writer stores the rest on its own.
        drop(feed);
        let stored = storing.join().map_err(|_| DistributionError::Io {
            context: format!("writing blob {digest}"),
            source: io::Error::other("the blob writer panicked"),
        })?;
        Ok::<_, DistributionError>((unpacked, stored))
    })?;
    if let Some(e) = stored.write_failed {
        return Err(DistributionError::Io {
            context: format!("writing blob {digest}"),
            source: e,
        });
    }
    let received = stored.received;
    if received > size {
        return Err(bad(format!(
            "blob {digest} is larger than the {size} bytes its descriptor says"
        )));
    }
    if received < size {
        let why = stored.failed.map(|f| format!(" ({f})")).unwrap_or_default();
        return Err(bad(format!(
            "blob {digest} is truncated: received {received} of {size} bytes{why}"
        )));
    }
    // Every byte arrived; a failure reported after the last one (the client's own digest
    // check) is judged by the check here.
    let staged = stored.ingest.finish(Some(digest)).map_err(|e| match e {
        ContentError::Mismatch { actual, .. } => bad(format!(
            "blob {digest} does not match its digest: its content hashes to {actual}"
        )),
        e => e.into(),
    })?;
    let unpacked = unpacked?;
    if unpacked.diff_id != *diff_id {
        return Err(bad(format!(
            "layer {digest} has diff id {}, the image config says {diff_id}",
            unpacked.diff_id
        )));
    }
    store.lease_add(&ctx.lease, &[digest], &[chain])?;
    if staged.commit()? {
        note(&ctx.created, |c| c.blobs.push(digest.clone()));
    }
    if tmp
        .commit(store.snapshots(), chain, unpacked.size)
        .map_err(ImageError::from)?
    {
        note(&ctx.created, |c| c.snapshots.push(chain.clone()));
    }
    Ok(())
}

/// Unpacks a layer whose blob the store has, at `position`.
fn unpack_stored(ctx: &Ctx, digest: &Digest, position: usize) -> Result<(), DistributionError> {
    let chain = &ctx.chains[position];
    ctx.store.lease_add(&ctx.lease, &[digest], &[chain])?;
    if ctx.store.snapshots().exists(chain) {
        return Ok(());
    }
    let parent = position.checked_sub(1).map(|p| &ctx.chains[p]);
    let mut created = Created::default();
    let result = ctx.store.ensure_layer(
        &ctx.store.content().path(digest),
        Some(&ctx.diff_ids[position]),
        parent,
        false,
        &mut created,
    );
    note(&ctx.created, |c| c.snapshots.extend(created.snapshots));
    result.map(|_| ()).map_err(|e| match e {
        ImageError::BadArchive(m) => bad(m),
        e => e.into(),
    })
}

async fn download(ctx: &Arc<Ctx>, job: &Job, id: &str) -> Result<(), DistributionError> {
    let remote = &ctx.remote;
    let oci = remote.oci_ref(None, None);
    let failed = |e| remote.error(format!("layer {}", job.digest), e);
    // Asked for as a range from its first byte: the registry then answers 206, whose body
    // the client does not hash (its hash of a whole answer would be a second one of every
    // byte; `store_blob` hashes them already). An empty range is not one a registry serves.
    let mut stream = if job.desc.size > 0 {
        match remote
            .client
            .pull_blob_stream_partial(&oci, job.digest.as_str(), 0, None)
            .await
            .map_err(failed)?
        {
            BlobResponse::Full(s) | BlobResponse::Partial(s) => s,
        }
    } else {
        remote
            .client
            .pull_blob_stream(&oci, job.digest.as_str())
            .await
            .map_err(failed)?
    };
    let (tx, rx) = mpsc::channel::<Msg>(16);
    let task = {
        let ctx = ctx.clone();
        let digest = job.digest.clone();
        let (size, position) = (job.desc.size, job.positions[0]);
        tokio::task::spawn_blocking(move || ingest_and_unpack(&ctx, rx, &digest, size, position))
    };
    let total = job.desc.size;
    let step = (total / 100).max(256 << 10);
    let (mut received, mut shown) = (0u64, 0u64);
    // Bytes of a restarted response to drop: a registry that ignores Range sends it all again.
    let mut skip = 0u64;
    let mut retries = 0;
    'download: loop {
        if ctx.stop.load(Ordering::Relaxed) {
            break;
        }
        match stream.next().await {
            Some(Ok(mut b)) => {
                if skip > 0 {
                    let n = skip.min(b.len() as u64);
                    skip -= n;
                    let _ = b.split_to(n as usize);
                    if b.is_empty() {
                        continue;
                    }
                }
                received += b.len() as u64;
                if tx.send(Msg::Data(b)).await.is_err() {
                    break;
                }
                if received - shown >= step || received == total {
                    shown = received;
                    offer(
                        &ctx.progress,
                        Progress::bytes(id, "Downloading", received, total),
                    );
                }
            }
            Some(Err(e)) => {
                // A connection lost part way: carry on from the bytes already received, as
                // Docker retries a layer download.
                while received < total && retries < MAX_RETRIES {
                    retries += 1;
                    match remote
                        .client
                        .pull_blob_stream_partial(&oci, job.digest.as_str(), received, None)
                        .await
                    {
                        Ok(BlobResponse::Partial(s)) => {
                            stream = s;
                            skip = 0;
                            continue 'download;
                        }
                        Ok(BlobResponse::Full(s)) => {
                            stream = s;
                            skip = received;
                            continue 'download;
                        }
                        Err(_) => {}
                    }
                }
                let _ = tx.send(Msg::Fail(e.to_string())).await;
                break;
            }
            None => {
                let _ = tx.send(Msg::End).await;
                break;
            }
        }
    }
    drop(tx);
    task.await.map_err(|e| DistributionError::Io {
        context: "layer task".into(),
        source: io::Error::other(e.to_string()),
    })??;
    send(&ctx.progress, Progress::layer(id, "Verifying Checksum")).await;
    send(&ctx.progress, Progress::layer(id, "Download complete")).await;
    Ok(())
}

async fn run_job(ctx: Arc<Ctx>, job: Job) -> Result<(), DistributionError> {
    let id = Progress::short_id(job.digest.as_str());
    if ctx.stop.load(Ordering::Relaxed) {
        return Err(DistributionError::Invalid("stopped".into()));
    }
    if job.present {
        let c = ctx.clone();
        let (digest, positions) = (job.digest.clone(), job.positions.clone());
        blocking(move || {
            let chains: Vec<&Digest> = positions.iter().map(|&p| &c.chains[p]).collect();
            c.store.lease_add(&c.lease, &[&digest], &chains)?;
            Ok(())
        })
        .await?;
        send(&ctx.progress, Progress::layer(&id, "Already exists")).await;
        return Ok(());
    }
    let mut rest = job.positions.as_slice();
    if !ctx.store.content().contains(&job.digest) {
        download(&ctx, &job, &id).await?;
        rest = &rest[1..];
    }
    for &p in rest {
        let c = ctx.clone();
        let digest = job.digest.clone();
        send(
            &ctx.progress,
            Progress::bytes(&id, "Extracting", 0, job.desc.size),
        )
        .await;
        blocking(move || unpack_stored(&c, &digest, p)).await?;
    }
    send(
        &ctx.progress,
        Progress::bytes(&id, "Extracting", job.desc.size, job.desc.size),
    )
    .await;
    send(&ctx.progress, Progress::layer(&id, "Pull complete")).await;
    Ok(())
}

/// What `POST /images/create?fromImage=..&tag=..` asks for: the reference to pull, and
/// whether it means every tag (no tag or digest anywhere, as `docker pull -a` sends it).
/// A `tag` that is a digest pins the digest.
pub fn create_reference(
    from_image: &str,
    tag: Option<&str>,
) -> Result<(String, bool), DistributionError> {
    let mut r = Reference::parse(from_image)?;
    match tag.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) if t.contains(':') => {
            r.digest = Some(
                Digest::parse(t)
                    .map_err(|_| DistributionError::Invalid(format!("invalid digest {t:?}")))?,
            );
            r.tag = None;
        }
        Some(t) => {
            r = Reference::parse(&format!("{}:{t}", r.name()))?;
        }
        None => {}
    }
    let all = r.tag.is_none() && r.digest.is_none();
    Ok((r.familiar(), all))
}

impl Distribution {
    /// `docker pull -a`: every tag of repository `name` (which must not carry a tag or
    /// digest), one after the other.
    pub async fn pull_all_tags(
        &self,
        name: &str,
        platform: Option<&str>,
        auth: Option<&AuthConfig>,
        progress: &Sender<Progress>,
    ) -> Result<Vec<PullResult>, DistributionError> {
        let r = Reference::parse(name)?;
        if r.tag.is_some() || r.digest.is_some() {
            return Err(DistributionError::Invalid(
                "tag can't be used with --all-tags/-a".into(),
            ));
        }
        let remote = self.remote(&r, auth).await?;
        let mut tags = remote
            .client
            .list_tags(&remote.oci_ref(None, None), &remote.auth, None, None)
            .await
            .map_err(|e| remote.error(format!("listing the tags of {}", r.familiar()), e))?
            .tags;
        tags.sort();
        let mut out = Vec::new();
        for tag in tags {
            let one = Reference {
                tag: Some(tag),
                ..r.clone()
            };
            out.push(Box::pin(self.pull(&one.familiar(), platform, auth, progress)).await?);
        }
        Ok(out)
    }

    /// Pulls `reference` (`busybox`, `127.0.0.1:5000/x:y`, `name@sha256:...`) for
    /// `platform` (`os/arch[/variant]`, default this machine's), with `auth` or the stored
    /// credentials, reporting progress as Docker does.
    pub async fn pull(
        &self,
        reference: &str,
        platform: Option<&str>,
        auth: Option<&AuthConfig>,
        progress: &Sender<Progress>,
    ) -> Result<PullResult, DistributionError> {
        let r = Reference::parse(reference)?.with_default_tag();
        let want = Want::parse(platform)?;
        let remote = Arc::new(self.remote(&r, auth).await?);
        let shown = r.familiar();
        let path = r.path.clone();
        let label = match (&r.tag, &r.digest) {
            (_, Some(d)) => d.to_string(),
            (Some(t), None) => t.clone(),
            (None, None) => "latest".into(),
        };
        send(
            progress,
            Progress {
                status: Some(format!("Pulling from {path}")),
                id: Some(label),
                ..Default::default()
            },
        )
        .await;

        let top = fetch_manifest(&remote, &r).await?;
        let top_digest = top.digest.clone();
        let (bytes, digest, media_type, manifest) = match top.kind {
            Kind::Manifest(m) => (top.bytes, top.digest, top.media_type, m),
            Kind::Index(index) => {
                let entry = choose(&index, &want)?;
                let d = Digest::parse(&entry.digest)?;
                let oci = remote.oci_ref(None, Some(d.as_str()));
                let f = fetch_manifest_at(&remote, &oci, &shown, Some(&d)).await?;
                match f.kind {
                    Kind::Manifest(m) => (f.bytes, f.digest, f.media_type, m),
                    Kind::Index(_) => {
                        return Err(bad(format!(
                            "index for {shown} names another index for {}",
                            want.text()
                        )));
                    }
                }
            }
        };

        // Pulls of one manifest take turns: the second finds the layers the first verified.
        let turn = {
            let mut pulls = self.pulls.lock().await;
            pulls.entry(digest.to_string()).or_default().clone()
        };
        let result = {
            let _turn = turn.lock().await;
            self.pull_manifest(
                &remote,
                &r,
                &want,
                &top_digest,
                bytes,
                digest.clone(),
                media_type,
                manifest,
                progress,
            )
            .await
        };
        {
            let mut pulls = self.pulls.lock().await;
            if Arc::strong_count(&turn) <= 2 {
                pulls.remove(digest.as_str());
            }
        }
        let (image, previous, downloaded) = result?;
        let updated = downloaded || previous.as_deref() != Some(image.id.as_str());
        send(progress, Progress::status(format!("Digest: {top_digest}"))).await;
        let status = if updated {
            format!("Status: Downloaded newer image for {shown}")
        } else {
            format!("Status: Image is up to date for {shown}")
        };
        send(progress, Progress::status(status)).await;
        Ok(PullResult {
            image,
            digest: top_digest.to_string(),
            reference: shown,
            updated,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn pull_manifest(
        &self,
        remote: &Arc<Remote>,
        r: &Reference,
        want: &Want,
        repo_digest: &Digest,
        bytes: Bytes,
        digest: Digest,
        media_type: String,
        manifest: Manifest,
        progress: &Sender<Progress>,
    ) -> Result<(Image, Option<String>, bool), DistributionError> {
        let (config_bytes, doc) = fetch_config(remote, &self.store, &manifest.config).await?;
        let config_digest = Digest::parse(&manifest.config.digest)?;
        if let Some(os) = doc.os.as_deref()
            && os != "linux"
        {
            return Err(DistributionError::Invalid(format!(
                "image operating system \"{os}\" cannot be used on this platform"
            )));
        }
        let arch = doc.architecture.clone().unwrap_or_default();
        if want.explicit && !want.matches("linux", &arch, doc.variant.as_deref()) {
            return Err(DistributionError::NotFound(format!(
                "image with reference {} was found but does not match the specified platform: wanted {}, actual: linux/{arch}",
                r.familiar(),
                want.text()
            )));
        }
        if doc.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(bad(format!(
                "image config {config_digest} lists {} layers, the manifest {}",
                doc.rootfs.diff_ids.len(),
                manifest.layers.len()
            )));
        }
        let mut diff_ids = Vec::new();
        let mut chains: Vec<Digest> = Vec::new();
        for d in &doc.rootfs.diff_ids {
            let d = Digest::parse(d)
                .map_err(|_| bad(format!("image config {config_digest}: bad diff id {d:?}")))?;
            chains.push(chain_id(chains.last(), &d));
            diff_ids.push(d);
        }
        let mut jobs: Vec<Job> = Vec::new();
        for (i, desc) in manifest.layers.iter().enumerate() {
            let d = Digest::parse(&desc.digest)
                .map_err(|_| bad(format!("manifest: bad layer digest {:?}", desc.digest)))?;
            match jobs.iter_mut().find(|j| j.digest == d) {
                Some(j) => j.positions.push(i),
                None => jobs.push(Job {
                    desc: desc.clone(),
                    digest: d,
                    positions: vec![i],
                    present: false,
                }),
            }
        }
        // The image itself is here (loaded, or pulled from elsewhere with other blobs): its
        // layers are unpacked already and its record is kept, so nothing is downloaded.
        let have_image = self.store.has_image(config_digest.as_str())?
            && chains.iter().all(|c| self.store.snapshots().exists(c));
        for job in &mut jobs {
            job.present = have_image
                || self.store.content().contains(&job.digest)
                    && job
                        .positions
                        .iter()
                        .all(|&p| self.store.snapshots().exists(&chains[p]));
            if !job.present {
                send(
                    progress,
                    Progress::layer(&Progress::short_id(job.digest.as_str()), "Pulling fs layer"),
                )
                .await;
            }
        }
        let downloaded = jobs.iter().any(|j| !j.present);

        let store = self.store.clone();
        let lease_name = digest.hex().to_string();
        let lease = Arc::new(blocking(move || Ok(store.lease_open(&lease_name)?)).await?);
        let ctx = Arc::new(Ctx {
            store: self.store.clone(),
            remote: remote.clone(),
            progress: progress.clone(),
            lease: lease.clone(),
            created: Default::default(),
            stop: Default::default(),
            diff_ids: diff_ids.clone(),
            chains: chains.clone(),
        });
        let results: Vec<Result<(), DistributionError>> =
            futures_util::stream::iter(jobs.into_iter().map(|job| {
                let ctx = ctx.clone();
                async move {
                    let r = run_job(ctx.clone(), job).await;
                    if r.is_err() {
                        ctx.stop.store(true, Ordering::Relaxed);
                    }
                    r
                }
            }))
            .buffer_unordered(self.max_downloads)
            .collect()
            .await;
        let mut failure: Option<DistributionError> = None;
        for r in results {
            if let Err(e) = r {
                let stopped = matches!(&e, DistributionError::Invalid(m) if m == "stopped");
                let replace = match &failure {
                    None => true,
                    Some(f) => {
                        matches!(f, DistributionError::Invalid(m) if m == "stopped") && !stopped
                    }
                };
                if replace {
                    failure = Some(e);
                }
            }
        }

        let outcome = match failure {
            Some(e) => Err(e),
            None => {
                self.commit(
                    &ctx,
                    r,
                    repo_digest,
                    bytes,
                    digest,
                    media_type,
                    &manifest,
                    config_bytes,
                    config_digest,
                    doc,
                )
                .await
            }
        };
        let created = std::mem::take(&mut *ctx.created.lock().unwrap_or_else(|e| e.into_inner()));
        drop(ctx);
        let store = self.store.clone();
        match outcome {
            Ok((image, previous)) => {
                blocking(move || {
                    store.lease_end(&lease);
                    Ok(())
                })
                .await?;
                let layers: Vec<String> =
                    manifest.layers.iter().map(|l| l.digest.clone()).collect();
                self.metadata
                    .add_sources(&format!("{}/{}", r.domain, r.path), &layers);
                Ok((image, previous, downloaded))
            }
            Err(e) => {
                blocking(move || {
                    store.lease_abandon(&lease, created);
                    Ok(())
                })
                .await?;
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        ctx: &Ctx,
        r: &Reference,
        repo_digest: &Digest,
        bytes: Bytes,
        digest: Digest,
        media_type: String,
        manifest: &Manifest,
        config_bytes: Vec<u8>,
        config_digest: Digest,
        doc: ConfigDoc,
    ) -> Result<(Image, Option<String>), DistributionError> {
        let mut layers = Vec::new();
        for (i, desc) in manifest.layers.iter().enumerate() {
            layers.push(LayerRecord {
                blob: Descriptor {
                    media_type: desc.media_type.clone(),
                    digest: desc.digest.clone(),
                    size: desc.size,
                    ..Default::default()
                },
                diff_id: ctx.diff_ids[i].to_string(),
                chain_id: ctx.chains[i].to_string(),
                size: self.store.snapshots().size(&ctx.chains[i]),
            });
        }
        let mut names = Vec::new();
        if r.digest.is_none() {
            names.push(r.clone());
        }
        names.push(Reference {
            tag: None,
            digest: Some(repo_digest.clone()),
            ..r.clone()
        });
        let store = self.store.clone();
        let config_size = config_bytes.len() as u64;
        let manifest_size = bytes.len() as u64;
        blocking(move || {
            let blobs = vec![
                store.content().stage_bytes(&bytes, Some(&digest))?,
                store
                    .content()
                    .stage_bytes(&config_bytes, Some(&config_digest))?,
            ];
            let pulled = Pulled {
                manifest: Descriptor {
                    media_type,
                    digest: digest.to_string(),
                    size: manifest_size,
                    ..Default::default()
                },
                config_size,
                doc,
                id: config_digest,
                layers,
                names,
                blobs,
            };
            Ok(store.commit_pulled(pulled)?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::oci::Platform;

    fn entry(os: &str, arch: &str, variant: Option<&str>, digest: &str) -> Descriptor {
        Descriptor {
            media_type: oci::OCI_MANIFEST.into(),
            digest: digest.into(),
            size: 1,
            platform: Some(Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: variant.map(str::to_string),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn create_requests_name_what_to_pull() {
        let d = format!("sha256:{}", "a".repeat(64));
        let c = |f: &str, t: Option<&str>| create_reference(f, t).unwrap();
        assert_eq!(
            c("busybox", Some("latest")),
            ("busybox:latest".into(), false)
        );
        assert_eq!(c("busybox", None), ("busybox".into(), true));
        assert_eq!(c("busybox", Some("")), ("busybox".into(), true));
        assert_eq!(c("busybox:1.36", None), ("busybox:1.36".into(), false));
        assert_eq!(c("busybox", Some(&d)), (format!("busybox@{d}"), false));
        assert_eq!(
            c("127.0.0.1:5000/x/y", Some("v1")),
            ("127.0.0.1:5000/x/y:v1".into(), false)
        );
        assert!(create_reference("busybox", Some("sha256:zz")).is_err());
        assert!(create_reference("Bad", Some("x")).is_err());
    }

    #[test]
    fn platforms_are_chosen_like_docker() {
        let index = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![
                entry("linux", "arm", Some("v7"), "arm"),
                entry("linux", "arm64", Some("v8"), "arm64"),
                entry("linux", "amd64", None, "amd64"),
                entry("windows", "amd64", None, "win"),
            ],
        };
        let pick =
            |p: Option<&str>| choose(&index, &Want::parse(p).unwrap()).map(|d| d.digest.clone());
        assert_eq!(pick(Some("linux/amd64")).unwrap(), "amd64");
        assert_eq!(pick(Some("linux/arm64")).unwrap(), "arm64");
        assert_eq!(pick(Some("linux/arm64/v8")).unwrap(), "arm64");
        assert_eq!(pick(Some("linux/arm/v7")).unwrap(), "arm");
        assert_eq!(pick(Some("windows/amd64")).unwrap(), "win");
        assert_eq!(pick(None).unwrap(), host_arch());
        let err = pick(Some("linux/s390x")).unwrap_err().to_string();
        assert_eq!(
            err,
            "no matching manifest for linux/s390x in the manifest list entries"
        );
        assert!(Want::parse(Some("linux")).is_err());
        assert!(Want::parse(Some("linux/amd64/v1/x")).is_err());
    }
}
