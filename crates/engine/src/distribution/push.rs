//! Push: layers (compressed when stored uncompressed), config, manifest.
//!
//! A layer blob the store keeps compressed is pushed as it is, so an image pulled from one
//! registry keeps its manifest digest in another. An uncompressed layer is compressed in
//! blocks on every core (concatenated gzip members or zstd frames: valid streams every
//! reader takes) and uploaded while it is compressed (a chunked upload, whose digest is
//! named at its end); what it compressed to is remembered per registry-independent diff id.
//! Before uploading, the registry is asked whether it has the blob (skip) and whether
//! another repository of it does (mount); for a layer compressed before, that is asked of
//! the blob it compressed to.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::HeaderValue;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc::Sender;

use super::metadata::CompressedBlob;
use super::progress::{Progress, offer, send};
use super::{AuthConfig, Distribution, DistributionError, Remote, io_ctx};
use crate::content::Digest;
use crate::image::oci::{self, Descriptor, Manifest};
use crate::image::pulled::Compression;
use crate::image::{ImageRecord, LayerRecord, Reference};

const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// How a push compresses layers the store keeps uncompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerCompression {
    #[default]
    Gzip,
    Zstd,
}

impl LayerCompression {
    pub fn parse(s: &str) -> Result<LayerCompression, DistributionError> {
        match s {
            "" | "gzip" => Ok(LayerCompression::Gzip),
            "zstd" => Ok(LayerCompression::Zstd),
            other => Err(DistributionError::Invalid(format!(
                "unknown layer compression {other:?}: gzip or zstd"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LayerCompression::Gzip => "gzip",
            LayerCompression::Zstd => "zstd",
        }
    }

    fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Gzip => Compression::Gzip.oci_layer_type(),
            LayerCompression::Zstd => Compression::Zstd.oci_layer_type(),
        }
    }
}

/// One tag a push sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushResult {
    pub tag: String,
    /// The digest of the manifest in the registry.
    pub digest: String,
    /// The manifest's size in bytes.
    pub size: u64,
}

/// Input per block of parallel compression: large enough that each gzip member or zstd
/// frame compresses well, small enough that every core gets work from one layer.
const BLOCK: usize = 4 << 20;
/// gzip level: the fastest. On this project's big benchmark layer (700 MB of Python sources)
/// zlib-rs compresses 166 MB/s per core at level 1 against 72 at level 3 (55 at 6), for
/// output 27 % larger than level 3's: on a local network the upload of the difference costs
/// far less than the compression time saved.
const GZIP_LEVEL: u32 = 1;
/// Compressed bytes are uploaded in requests of this size.
const UPLOAD_PIECE: usize = 4 << 20;
const ZSTD_LEVEL: i32 = 3;

fn compress_block(block: &[u8], kind: LayerCompression) -> io::Result<Vec<u8>> {
    match kind {
        LayerCompression::Gzip => {
            // A zero mtime in the header (flate2's default) keeps the output reproducible.
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(block.len() / 2),
                flate2::Compression::new(GZIP_LEVEL),
            );
            e.write_all(block)?;
            e.finish()
        }
        LayerCompression::Zstd => zstd::bulk::compress(block, ZSTD_LEVEL),
    }
}

fn read_block(input: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut block = Vec::with_capacity(BLOCK);
    input.take(BLOCK as u64).read_to_end(&mut block)?;
    Ok(block)
}

/// Compresses `input` into `out` with every core, block by block, in order; `done` hears
/// the input bytes consumed so far.
pub(crate) fn compress_parallel(
    input: &mut dyn Read,
    out: &mut dyn Write,
    kind: LayerCompression,
    done: &mut dyn FnMut(u64),
) -> io::Result<u64> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16);
    let mut consumed = 0u64;
    let mut first = true;
    loop {
        let mut blocks = Vec::with_capacity(threads);
        let mut last = false;
        while blocks.len() < threads {
            let b = read_block(input)?;
            let short = b.len() < BLOCK;
            if !b.is_empty() || (first && blocks.is_empty()) {
                blocks.push(b);
            }
            if short {
                last = true;
                break;
            }
        }
        first = false;
        let compressed: Vec<io::Result<Vec<u8>>> = std::thread::scope(|s| {
            let handles: Vec<_> = blocks
                .iter()
                .map(|b| s.spawn(move || compress_block(b, kind)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("compression thread panicked")))
                })
                .collect()
        });
        for (block, c) in blocks.iter().zip(compressed) {
            out.write_all(&c?)?;
            consumed += block.len() as u64;
        }
        done(consumed);
        if last {
            return Ok(consumed);
        }
    }
}

fn compression_of(path: &Path) -> Result<Compression, DistributionError> {
    let mut head = [0u8; 4];
    let n = File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(io_ctx(format!("reading {}", path.display())))?;
    Ok(Compression::detect(&head[..n]))
}

/// A file as an upload body, reporting `Pushing` as it is read.
fn file_body(
    path: &Path,
    progress: Sender<Progress>,
    id: String,
    total: u64,
) -> Result<
    impl futures_util::Stream<Item = oci_client::errors::Result<Bytes>> + Send + 'static,
    DistributionError,
> {
    let file = File::open(path).map_err(io_ctx(format!("opening {}", path.display())))?;
    let file = tokio::fs::File::from_std(file);
    let step = (total / 100).max(256 << 10);
    Ok(futures_util::stream::unfold(
        (file, 0u64, 0u64, false),
        move |(mut f, sent, shown, failed)| {
            let progress = progress.clone();
            let id = id.clone();
            async move {
                if failed {
                    return None;
                }
                let mut buf = vec![0u8; 256 << 10];
                match f.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        let sent = sent + n as u64;
                        let mut shown = shown;
                        if sent - shown >= step || sent == total {
                            shown = sent;
                            offer(&progress, Progress::bytes(&id, "Pushing", sent, total));
                        }
                        Some((Ok(Bytes::from(buf)), (f, sent, shown, false)))
                    }
                    Err(e) => Some((Err(e.into()), (f, sent, shown, true))),
                }
            }
        },
    ))
}

/// The manifest JSON: Docker's schema 2 when the image came with one and every layer fits
/// it, else OCI.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestOut<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

struct Upload {
    desc: Descriptor,
}

/// The compressed stream on its way from the compressing thread to the upload, in pieces of
/// [`UPLOAD_PIECE`].
struct PieceSender {
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    piece: Vec<u8>,
}

impl PieceSender {
    fn send(&mut self) -> io::Result<()> {
        if self.piece.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.piece, Vec::with_capacity(UPLOAD_PIECE));
        self.tx
            .blocking_send(Ok(Bytes::from(piece)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl Write for PieceSender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.piece.extend_from_slice(buf);
        if self.piece.len() >= UPLOAD_PIECE {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Distribution {
    /// Pushes `name` (`127.0.0.1:5000/x:y`; without a tag, `tag` or else every tag of the
    /// repository) with `auth` or the stored credentials. Uncompressed layers are compressed
    /// with `compression`.
    pub async fn push(
        &self,
        name: &str,
        tag: Option<&str>,
        auth: Option<&AuthConfig>,
        compression: LayerCompression,
        progress: &Sender<Progress>,
    ) -> Result<Vec<PushResult>, DistributionError> {
        let r = Reference::parse(name)?;
        if r.digest.is_some() {
            return Err(DistributionError::Invalid(format!(
                "cannot push a digest reference: {name}"
            )));
        }
        let tag = r
            .tag
            .clone()
            .or_else(|| tag.filter(|t| !t.is_empty()).map(str::to_string));
        let targets: Vec<(Reference, ImageRecord)> = match tag {
            Some(t) => {
                let tagged = Reference {
                    tag: Some(t),
                    ..r.clone()
                };
                let rec = self.store.tagged(&tagged.key())?.ok_or_else(|| {
                    DistributionError::NotFound(format!(
                        "An image does not exist locally with the tag: {}",
                        tagged.familiar()
                    ))
                })?;
                vec![(tagged, rec)]
            }
            None => {
                let all = self.store.repository_tags(&r.name())?;
                if all.is_empty() {
                    return Err(DistributionError::NotFound(format!(
                        "An image does not exist locally with the tag: {}",
                        r.familiar_name()
                    )));
                }
                all
            }
        };
        let remote = Arc::new(self.remote(&r, auth).await?);
        send(
            progress,
            Progress::status(format!("The push refers to repository [{}]", r.name())),
        )
        .await;
        let mut results = Vec::new();
        for (tagged, record) in targets {
            results.push(
                self.push_tag(&remote, &tagged, &record, compression, progress)
                    .await?,
            );
        }
        Ok(results)
    }

    async fn push_tag(
        &self,
        remote: &Arc<Remote>,
        tagged: &Reference,
        record: &ImageRecord,
        compression: LayerCompression,
        progress: &Sender<Progress>,
    ) -> Result<PushResult, DistributionError> {
        let tag = tagged.tag.clone().unwrap_or_else(|| "latest".into());
        for layer in &record.layers {
            send(
                progress,
                Progress::layer(&Progress::short_id(&layer.diff_id), "Preparing"),
            )
            .await;
        }
        // The futures are made first: a closure mapping the stream would make the whole
        // push future lose `Send` (a higher-ranked lifetime the compiler cannot prove).
        let layers: Vec<_> = record
            .layers
            .iter()
            .map(|l| self.push_layer(remote, l, compression, progress))
            .collect();
        let uploads: Vec<Upload> = futures_util::stream::iter(layers)
            .buffered(self.max_uploads)
            .try_collect()
            .await?;

        let repo = remote.oci_ref(None, None);
        let config_digest = Digest::parse(&record.id)?;
        let exists = remote
            .client
            .blob_exists(&repo, config_digest.as_str())
            .await
            .map_err(|e| remote.error(format!("checking config {config_digest}"), e))?;
        if !exists {
            let config = self.store.content().read_blob(&config_digest)?;
            remote
                .client
                .push_blob(&repo, config, config_digest.as_str())
                .await
                .map_err(|e| remote.error(format!("pushing config {config_digest}"), e))?;
        }

        let manifest_digest = Digest::parse(&record.manifest.digest)?;
        let stored: Option<Manifest> = self
            .store
            .content()
            .read_blob(&manifest_digest)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let unchanged = stored.as_ref().is_some_and(|m| {
            m.layers.len() == uploads.len()
                && m.layers
                    .iter()
                    .zip(&uploads)
                    .all(|(a, b)| a.digest == b.desc.digest)
                && m.config.digest == record.id
        });
        let (body, media_type) = if unchanged {
            (
                self.store.content().read_blob(&manifest_digest)?,
                record.manifest.media_type.clone(),
            )
        } else {
            let docker = record.manifest.media_type == oci::DOCKER_MANIFEST
                && uploads.iter().all(|u| !u.desc.media_type.contains("zstd"));
            let media_type = if docker {
                oci::DOCKER_MANIFEST
            } else {
                oci::OCI_MANIFEST
            };
            let layers = uploads
                .iter()
                .map(|u| {
                    let mut d = u.desc.clone();
                    if docker && d.media_type == Compression::Gzip.oci_layer_type() {
                        d.media_type = DOCKER_LAYER_GZIP.into();
                    }
                    d.annotations = None;
                    d.platform = None;
                    d
                })
                .collect();
            let out = ManifestOut {
                schema_version: 2,
                media_type,
                config: Descriptor {
                    media_type: if docker {
                        DOCKER_CONFIG.into()
                    } else {
                        oci::OCI_CONFIG.into()
                    },
                    digest: record.id.clone(),
                    size: record.config_size,
                    ..Default::default()
                },
                layers,
            };
            let body = serde_json::to_vec(&out)
                .map_err(|e| DistributionError::Invalid(format!("encoding the manifest: {e}")))?;
            (body, media_type.to_string())
        };
        let digest = Digest::of(&body);
        let size = body.len() as u64;
        let content_type = HeaderValue::from_str(&media_type)
            .map_err(|_| DistributionError::Invalid(format!("bad media type {media_type:?}")))?;
        remote
            .client
            .push_manifest_raw(&remote.oci_ref(Some(&tag), None), body, content_type)
            .await
            .map_err(|e| remote.error(format!("pushing manifest for {}", tagged.familiar()), e))?;

        send(
            progress,
            Progress::status(format!("{tag}: digest: {digest} size: {size}")),
        )
        .await;
        send(
            progress,
            Progress {
                progress_detail: Some(Default::default()),
                aux: Some(serde_json::json!({"Tag": tag, "Digest": digest.as_str(), "Size": size})),
                ..Default::default()
            },
        )
        .await;
        let repository = format!("{}/{}", tagged.domain, tagged.path);
        let mut blobs: Vec<String> = uploads.iter().map(|u| u.desc.digest.clone()).collect();
        blobs.push(record.id.clone());
        self.metadata.add_sources(&repository, &blobs);
        let digest_ref = Reference {
            tag: None,
            digest: Some(digest.clone()),
            ..tagged.clone()
        };
        let store = self.store.clone();
        let id = record.id.clone();
        tokio::task::spawn_blocking(move || store.add_names(&id, &[digest_ref]))
            .await
            .map_err(|e| {
                io_ctx("recording the pushed digest")(io::Error::other(e.to_string()))
            })??;
        Ok(PushResult {
            tag,
            digest: digest.to_string(),
            size,
        })
    }

    async fn push_layer(
        &self,
        remote: &Arc<Remote>,
        layer: &LayerRecord,
        compression: LayerCompression,
        progress: &Sender<Progress>,
    ) -> Result<Upload, DistributionError> {
        let id = Progress::short_id(&layer.diff_id);
        let repo = remote.oci_ref(None, None);
        let blob = Digest::parse(&layer.blob.digest)?;
        let path = self.store.content().path(&blob);
        let stored_as = compression_of(&path)?;
        if stored_as == Compression::None {
            return self
                .push_uncompressed(remote, layer, &id, compression, progress)
                .await;
        }
        let mut desc = layer.blob.clone();
        if desc.media_type.is_empty()
            || !desc.media_type.contains('+')
                && !desc.media_type.contains("gzip")
                && !desc.media_type.contains("zstd")
        {
            desc.media_type = stored_as.oci_layer_type().into();
        }
        let upload = Upload { desc };
        let exists = remote
            .client
            .blob_exists(&repo, &upload.desc.digest)
            .await
            .map_err(|e| remote.error(format!("checking layer {}", upload.desc.digest), e))?;
        if exists {
            send(progress, Progress::layer(&id, "Layer already exists")).await;
            return Ok(upload);
        }
        if self
            .mount_from_sources(remote, &upload.desc.digest, &id, progress)
            .await
        {
            return Ok(upload);
        }
        let file = self.store.content().path(&blob);
        let body = file_body(&file, progress.clone(), id.clone(), upload.desc.size)?;
        remote
            .client
            .push_blob_stream(&repo, body, &upload.desc.digest, Some(upload.desc.size))
            .await
            .map_err(|e| remote.error(format!("pushing layer {}", upload.desc.digest), e))?;
        send(progress, Progress::layer(&id, "Pushed")).await;
        Ok(upload)
    }

    /// Mounts `digest` from another repository of the registry that holds it; false when
    /// none would.
    async fn mount_from_sources(
        &self,
        remote: &Arc<Remote>,
        digest: &str,
        id: &str,
        progress: &Sender<Progress>,
    ) -> bool {
        let repository = format!("{}/{}", remote.reference.domain, remote.reference.path);
        for source in self.metadata.sources(digest, &remote.registry, &repository) {
            if remote.mount(digest, &source).await {
                send(
                    progress,
                    Progress::layer(id, format!("Mounted from {source}")),
                )
                .await;
                return true;
            }
        }
        false
    }

    /// A layer the store keeps uncompressed: what it compressed to before, when the registry
    /// has that or can mount it; else compressed and uploaded at once.
    async fn push_uncompressed(
        &self,
        remote: &Arc<Remote>,
        layer: &LayerRecord,
        id: &str,
        compression: LayerCompression,
        progress: &Sender<Progress>,
    ) -> Result<Upload, DistributionError> {
        let repo = remote.oci_ref(None, None);
        if let Some(c) = self.metadata.compressed(&layer.diff_id, compression.name()) {
            let upload = Upload {
                desc: Descriptor {
                    media_type: c.media_type,
                    digest: c.digest,
                    size: c.size,
                    ..Default::default()
                },
            };
            let exists = remote
                .client
                .blob_exists(&repo, &upload.desc.digest)
                .await
                .map_err(|e| remote.error(format!("checking layer {}", upload.desc.digest), e))?;
            if exists {
                send(progress, Progress::layer(id, "Layer already exists")).await;
                return Ok(upload);
            }
            if self
                .mount_from_sources(remote, &upload.desc.digest, id, progress)
                .await
            {
                return Ok(upload);
            }
        }

        let blob = Digest::parse(&layer.blob.digest)?;
        let path = self.store.content().path(&blob);
        let total = self.store.content().size(&blob)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
        let compressing = {
            let progress = progress.clone();
            let id = id.to_string();
            tokio::task::spawn_blocking(move || -> io::Result<u64> {
                let mut input = File::open(&path)?;
                let mut out = PieceSender {
                    tx: tx.clone(),
                    piece: Vec::with_capacity(UPLOAD_PIECE),
                };
                let compressed = compress_parallel(&mut input, &mut out, compression, &mut |n| {
                    offer(&progress, Progress::bytes(&id, "Pushing", n, total));
                })
                .and_then(|n| out.flush().map(|()| n));
                if let Err(e) = &compressed {
                    // The upload must end in an error, not look like a complete blob.
                    let _ = tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
                }
                compressed
            })
        };
        let body = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
                .map(|item| item.map(|r| r.map_err(oci_client::errors::OciDistributionError::from)))
        });
        let pushed = remote.client.push_blob_stream_chunked(&repo, body).await;
        let compressed = compressing
            .await
            .map_err(|e| io_ctx("compressing a layer")(io::Error::other(e.to_string())))?;
        let pushed = match (compressed, pushed) {
            // The upload refused or lost: compression stopped only for that.
            (Err(e), _) if e.kind() != io::ErrorKind::BrokenPipe => {
                return Err(io_ctx(format!("compressing layer {}", layer.diff_id))(e));
            }
            (_, Err(e)) => {
                return Err(remote.error(format!("pushing layer {}", layer.diff_id), e));
            }
            (Err(e), Ok(_)) => {
                return Err(io_ctx(format!("compressing layer {}", layer.diff_id))(e));
            }
            (Ok(_), Ok(pushed)) => pushed,
        };
        let desc = Descriptor {
            media_type: compression.media_type().into(),
            digest: pushed.blob_digest,
            size: pushed.size,
            ..Default::default()
        };
        self.metadata.set_compressed(
            &layer.diff_id,
            compression.name(),
            CompressedBlob {
                digest: desc.digest.clone(),
                size: desc.size,
                media_type: desc.media_type.clone(),
            },
        );
        send(progress, Progress::layer(id, "Pushed")).await;
        Ok(Upload { desc })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(kind: LayerCompression, data: &[u8]) {
        let mut out = Vec::new();
        let mut seen = 0;
        let n = compress_parallel(&mut &data[..], &mut out, kind, &mut |d| seen = d).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(seen, data.len() as u64);
        let mut back = Vec::new();
        match kind {
            LayerCompression::Gzip => {
                assert_eq!(Compression::detect(&out), Compression::Gzip);
                flate2::read::MultiGzDecoder::new(&out[..])
                    .read_to_end(&mut back)
                    .unwrap();
            }
            LayerCompression::Zstd => {
                assert_eq!(Compression::detect(&out), Compression::Zstd);
                zstd::stream::read::Decoder::new(&out[..])
                    .unwrap()
                    .read_to_end(&mut back)
                    .unwrap();
            }
        }
        assert_eq!(back, data);
        // Reproducible: the same input compresses to the same bytes.
        let mut again = Vec::new();
        compress_parallel(&mut &data[..], &mut again, kind, &mut |_| {}).unwrap();
        assert_eq!(again, out);
    }

    #[test]
    fn parallel_compression_round_trips() {
        let mut data = Vec::new();
        for i in 0..(BLOCK * 5 / 2) {
            data.push((i % 251) as u8 ^ (i / 4096) as u8);
        }
        for kind in [LayerCompression::Gzip, LayerCompression::Zstd] {
            roundtrip(kind, &data);
            roundtrip(kind, &data[..BLOCK]);
            roundtrip(kind, b"small");
            roundtrip(kind, b"");
        }
        assert_eq!(
            LayerCompression::parse("zstd").unwrap(),
            LayerCompression::Zstd
        );
        assert!(LayerCompression::parse("lz4").is_err());
    }
}
