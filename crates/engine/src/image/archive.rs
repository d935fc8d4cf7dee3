//! `docker load` and `docker save`: docker-archive and OCI image layout, both directions.
//!
//! Load reads the archive once, as a stream: every file goes to ingest (hashed on the way;
//! a `blobs/sha256/<hex>` file must match its name, and one the store already has is
//! skipped), then the documents are read back and the images committed. Save writes what
//! Docker 25 and newer write: one tar that is a docker-archive (`manifest.json`,
//! `repositories`) and an OCI layout (`oci-layout`, `index.json`, `blobs/sha256/...`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;

use serde::de::DeserializeOwned;

use super::config::{ConfigDoc, host_arch};
use super::oci::{self, ArchiveEntry, Descriptor, Index, Manifest};
use super::unpack::Compression;
use super::{Created, ImageError, ImageRecord, ImageStore, LayerRecord, Reference, io_ctx, now};
use crate::content::{Digest, Staged};
use crate::meta::{Change, Table};

/// Documents (manifest.json, index.json, configs, manifests) are read into memory: a
/// bound keeps a hostile archive from making that unbounded.
const MAX_DOCUMENT: u64 = 64 << 20;

enum ArchiveFile {
    Staged(Staged),
    Stored(Digest),
    Link(String),
}

struct Archive {
    files: HashMap<String, ArchiveFile>,
}

/// A file of the archive (or a blob of the store it names), ready to read.
struct Found {
    key: String,
    path: PathBuf,
    digest: Digest,
    size: u64,
    /// In this archive and not yet in the store.
    new: bool,
}

/// Where an image's manifest comes from.
enum ManifestSrc {
    /// The archive has one (OCI layout): kept byte for byte.
    Archive { key: String, media_type: String },
    /// docker-archive has none: one is written.
    Generate,
}

struct Pending {
    config: String,
    manifest: ManifestSrc,
    layers: Vec<(String, Option<String>)>,
    names: Vec<Reference>,
}

fn bad(msg: impl Into<String>) -> ImageError {
    ImageError::BadArchive(msg.into())
}

/// An archive member name as a key: no leading `./` or `/`, no `..`.
fn archive_key(name: &str) -> Result<String, ImageError> {
    let mut parts = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(bad(format!("member {name:?} has a \"..\" component"))),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Where a symlink member at `key` (in directory `dir`) points, as a key: `..` may climb
/// (skopeo's docker-archive links `<id>/layer.tar` to `../<digest>.tar`) but not out.
fn link_key(key: &str, dir: &str, target: &str) -> Result<String, ImageError> {
    let mut parts: Vec<&str> = Vec::new();
    for c in dir.split('/').chain(target.split('/')) {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(bad(format!("member {key} links outside the archive")));
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

fn blob_key(digest: &str) -> Result<String, ImageError> {
    let d = Digest::parse(digest).map_err(|_| bad(format!("unsupported digest {digest:?}")))?;
    Ok(format!("blobs/sha256/{}", d.hex()))
}

fn digest_of_key(key: &str) -> Option<Digest> {
    let hex = key.strip_prefix("blobs/sha256/")?;
    Digest::parse(&format!("sha256:{hex}")).ok()
}

/// The reference a descriptor in index.json names, if any. `ref.name` is often only a tag
/// (skopeo, umoci): then there is no repository to give it, and the image stays untagged.
fn descriptor_names(desc: &Descriptor) -> Vec<Reference> {
    let full = desc.annotation(oci::ANNOTATION_IMAGE_NAME).or_else(|| {
        desc.annotation(oci::ANNOTATION_REF_NAME)
            .filter(|n| n.contains(['/', ':', '@']))
    });
    full.and_then(|n| Reference::parse(n).ok())
        .map(|r| vec![r.with_default_tag()])
        .unwrap_or_default()
}

impl ImageStore {
    /// Loads every image of a docker-archive or OCI layout tar (optionally gzip or zstd
    /// compressed). Returns Docker's report lines (`Loaded image: busybox:latest`).
    pub fn load(&self, archive: &mut dyn Read) -> Result<Vec<String>, ImageError> {
        let mut archive = self.read_archive(archive)?;
        let pending = if archive.files.contains_key("manifest.json") {
            let entries: Vec<ArchiveEntry> = self.read_json(&archive, "manifest.json")?;
            let mut pending = Vec::new();
            for e in entries {
                let names = e
                    .repo_tags
                    .iter()
                    .map(|t| Reference::parse(t).map(Reference::with_default_tag))
                    .collect::<Result<Vec<_>, _>>()?;
                pending.push(Pending {
                    config: archive_key(&e.config)?,
                    manifest: ManifestSrc::Generate,
                    layers: e
                        .layers
                        .iter()
                        .map(|l| archive_key(l).map(|k| (k, None)))
                        .collect::<Result<_, _>>()?,
                    names,
                });
            }
            pending
        } else if archive.files.contains_key("index.json") {
            let index: Index = self.read_json(&archive, "index.json")?;
            let mut pending = Vec::new();
            for desc in &index.manifests {
                self.collect_oci(&archive, desc, descriptor_names(desc), 0, &mut pending)?;
            }
            pending
        } else {
            return Err(bad(
                "neither manifest.json (docker-archive) nor index.json (OCI layout) found",
            ));
        };
        if pending.is_empty() {
            return Err(bad("the archive holds no image"));
        }

        let _g = self.lock();
        let mut created = Created::default();
        match self.commit_load(&mut archive, pending, &mut created) {
            Ok(lines) => Ok(lines),
            Err(e) => {
                self.roll_back(created);
                Err(e)
            }
        }
    }

    fn read_archive(&self, input: &mut dyn Read) -> Result<Archive, ImageError> {
        let mut buffered = BufReader::with_capacity(256 * 1024, input);
        let head = buffered
            .fill_buf()
            .map_err(io_ctx("reading archive"))?
            .to_vec();
        let decoder: Box<dyn Read + '_> = match Compression::detect(&head) {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(buffered)
                    .map_err(io_ctx("starting zstd decoder"))?,
            ),
            Compression::None => Box::new(buffered),
        };
        let mut tar = tar::Archive::new(decoder);
        let mut files = HashMap::new();
        let entries = tar.entries().map_err(|e| bad(format!("tar: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(format!("tar: {e}")))?;
            let name = String::from_utf8(entry.path_bytes().into_owned())
                .map_err(|_| bad("a member name is not UTF-8"))?;
            let key = archive_key(&name)?;
            let file = match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let expected = digest_of_key(&key);
                    match expected {
                        Some(d) if self.content.contains(&d) => ArchiveFile::Stored(d),
                        _ => ArchiveFile::Staged(
                            self.content
                                .stage_reader(&mut entry, expected.as_ref())
                                .map_err(|e| match e {
                                    crate::content::ContentError::Mismatch { .. } => {
                                        bad(format!("{key} does not match its digest: {e}"))
                                    }
                                    e => e.into(),
                                })?,
                        ),
                    }
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                        .unwrap_or_default();
                    if target.starts_with('/') {
                        return Err(bad(format!("member {key} links outside the archive")));
                    }
                    let dir = key.rsplit_once('/').map_or("", |(d, _)| d);
                    ArchiveFile::Link(link_key(&key, dir, &target)?)
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                        .unwrap_or_default();
                    ArchiveFile::Link(archive_key(&target)?)
                }
                _ => continue,
            };
            files.insert(key, file);
        }
        Ok(Archive { files })
    }

    /// The archive file `key` (following links), or the store's blob a blob path names.
    fn find(&self, archive: &Archive, key: &str) -> Result<Found, ImageError> {
        let mut key = key.to_string();
        for _ in 0..16 {
            match archive.files.get(&key) {
                Some(ArchiveFile::Link(target)) => key = target.clone(),
                Some(ArchiveFile::Staged(s)) => {
                    return Ok(Found {
                        path: s.path().to_path_buf(),
                        digest: s.digest().clone(),
                        size: s.size(),
                        new: true,
                        key,
                    });
                }
                Some(ArchiveFile::Stored(d)) => return self.found_in_store(key.clone(), d),
                None => {
                    return match digest_of_key(&key) {
                        Some(d) if self.content.contains(&d) => self.found_in_store(key, &d),
                        _ => Err(bad(format!("{key} is missing"))),
                    };
                }
            }
        }
        Err(bad(format!("{key}: too many levels of links")))
    }

    fn found_in_store(&self, key: String, d: &Digest) -> Result<Found, ImageError> {
        Ok(Found {
            key,
            path: self.content.path(d),
            digest: d.clone(),
            size: self.content.size(d)?,
            new: false,
        })
    }

    fn read_doc(&self, found: &Found) -> Result<Vec<u8>, ImageError> {
        if found.size > MAX_DOCUMENT {
            return Err(bad(format!("{} is too large for a document", found.key)));
        }
        std::fs::read(&found.path).map_err(io_ctx(format!("reading {}", found.key)))
    }

    fn read_json<T: DeserializeOwned>(
        &self,
        archive: &Archive,
        key: &str,
    ) -> Result<T, ImageError> {
        let found = self.find(archive, key)?;
        let data = self.read_doc(&found)?;
        serde_json::from_slice(&data).map_err(|e| bad(format!("{key}: {e}")))
    }

    fn collect_oci(
        &self,
        archive: &Archive,
        desc: &Descriptor,
        names: Vec<Reference>,
        depth: usize,
        pending: &mut Vec<Pending>,
    ) -> Result<(), ImageError> {
        if depth > 4 {
            return Err(bad("indexes nest too deeply"));
        }
        let key = blob_key(&desc.digest)?;
        if oci::is_index(&desc.media_type) {
            let index: Index = self.read_json(archive, &key)?;
            let wanted = |d: &&Descriptor| {
                d.platform
                    .as_ref()
                    .is_none_or(|p| p.os == "linux" && p.architecture == host_arch())
                    && d.annotation("vnd.docker.reference.type").is_none()
            };
            let chosen = index.manifests.iter().find(wanted).ok_or_else(|| {
                bad(format!(
                    "{}: no image for linux/{}",
                    desc.digest,
                    host_arch()
                ))
            })?;
            return self.collect_oci(archive, chosen, names, depth + 1, pending);
        }
        let manifest: Manifest = self.read_json(archive, &key)?;
        let media_type = if desc.media_type.is_empty() {
            manifest
                .media_type
                .clone()
                .unwrap_or_else(|| oci::OCI_MANIFEST.into())
        } else {
            desc.media_type.clone()
        };
        if !oci::is_manifest(&media_type) {
            return Err(bad(format!(
                "{}: unsupported media type {media_type}",
                desc.digest
            )));
        }
        pending.push(Pending {
            config: blob_key(&manifest.config.digest)?,
            manifest: ManifestSrc::Archive { key, media_type },
            layers: manifest
                .layers
                .iter()
                .map(|l| blob_key(&l.digest).map(|k| (k, Some(l.media_type.clone()))))
                .collect::<Result<_, _>>()?,
            names,
        });
        Ok(())
    }

    fn commit_load(
        &self,
        archive: &mut Archive,
        pending: Vec<Pending>,
        created: &mut Created,
    ) -> Result<Vec<String>, ImageError> {
        let old_tags: HashMap<String, String> = self.tags()?.into_iter().collect();
        let mut lines = Vec::new();
        let mut batch = Vec::new();
        let mut records: BTreeMap<String, ImageRecord> = BTreeMap::new();
        let mut keep: HashSet<String> = HashSet::new();
        let mut generated: Vec<Staged> = Vec::new();

        for p in pending {
            let config = self.find(archive, &p.config)?;
            let id = config.digest.to_string();
            if !records.contains_key(&id) {
                let record =
                    self.load_image(archive, &p, &config, &mut keep, &mut generated, created)?;
                records.insert(id.clone(), record);
            }
            if p.names.is_empty() {
                lines.push(format!("Loaded image ID: {id}"));
            }
            for name in &p.names {
                if let Some(old) = old_tags.get(&name.key())
                    && *old != id
                {
                    lines.push(format!(
                        "The image {} already exists, renaming the old one with ID {old} to empty string",
                        name.familiar()
                    ));
                }
                batch.push(Change::put(Table::Tags, name.key(), &id)?);
                lines.push(format!("Loaded image: {}", name.familiar()));
                if let Some(r) = records.get_mut(&id) {
                    r.last_tag_time = Some(now());
                }
            }
        }
        for r in records.values() {
            batch.push(Change::put(Table::Images, r.id.clone(), r)?);
        }
        let mut staged = generated;
        for key in keep {
            if let Some(ArchiveFile::Staged(s)) = archive.files.remove(&key) {
                staged.push(s);
            }
        }
        self.commit_blobs(staged, created)?;
        self.meta.apply(batch)?;
        Ok(lines)
    }

    fn load_image(
        &self,
        archive: &Archive,
        p: &Pending,
        config: &Found,
        keep: &mut HashSet<String>,
        generated: &mut Vec<Staged>,
        created: &mut Created,
    ) -> Result<ImageRecord, ImageError> {
        let raw = self.read_doc(config)?;
        let doc: ConfigDoc = serde_json::from_slice(&raw)
            .map_err(|e| bad(format!("image config {}: {e}", config.key)))?;
        if let Some(os) = doc.os.as_deref()
            && os != "linux"
        {
            return Err(ImageError::Invalid(format!(
                "image operating system \"{os}\" cannot be used on this platform"
            )));
        }
        if doc.rootfs.diff_ids.len() != p.layers.len() {
            return Err(bad(format!(
                "image config {} lists {} layers, the manifest {}",
                config.key,
                doc.rootfs.diff_ids.len(),
                p.layers.len()
            )));
        }
        keep.insert(config.key.clone());
        let mut layers = Vec::new();
        let mut parent: Option<Digest> = None;
        for ((key, media_type), diff_id) in p.layers.iter().zip(&doc.rootfs.diff_ids) {
            let diff_id = Digest::parse(diff_id).map_err(|_| {
                bad(format!(
                    "image config {}: bad diff id {diff_id:?}",
                    config.key
                ))
            })?;
            let blob = self.find(archive, key)?;
            let (diff_id, chain, size) = self.ensure_layer(
                &blob.path,
                Some(&diff_id),
                parent.as_ref(),
                blob.new,
                created,
            )?;
            let media_type = match media_type {
                Some(m) if !m.is_empty() => m.clone(),
                _ => {
                    let mut head = [0u8; 4];
                    let n = File::open(&blob.path)
                        .and_then(|mut f| f.read(&mut head))
                        .map_err(io_ctx(format!("reading {}", blob.key)))?;
                    Compression::detect(&head[..n]).oci_layer_type().to_string()
                }
            };
            keep.insert(blob.key.clone());
            layers.push(LayerRecord {
                blob: Descriptor {
                    media_type,
                    digest: blob.digest.to_string(),
                    size: blob.size,
                    ..Default::default()
                },
                diff_id: diff_id.to_string(),
                chain_id: chain.to_string(),
                size,
            });
            parent = Some(chain);
        }
        let manifest = match &p.manifest {
            ManifestSrc::Archive { key, media_type } => {
                let found = self.find(archive, key)?;
                keep.insert(found.key.clone());
                Descriptor {
                    media_type: media_type.clone(),
                    digest: found.digest.to_string(),
                    size: found.size,
                    ..Default::default()
                }
            }
            ManifestSrc::Generate => {
                let m = Manifest {
                    schema_version: 2,
                    media_type: Some(oci::OCI_MANIFEST.into()),
                    config: Descriptor {
                        media_type: oci::OCI_CONFIG.into(),
                        digest: config.digest.to_string(),
                        size: config.size,
                        ..Default::default()
                    },
                    layers: layers.iter().map(|l| l.blob.clone()).collect(),
                };
                let bytes = serde_json::to_vec(&m)
                    .map_err(|e| ImageError::Invalid(format!("encoding manifest: {e}")))?;
                let staged = self.content.stage_bytes(&bytes, None)?;
                let desc = Descriptor {
                    media_type: oci::OCI_MANIFEST.into(),
                    digest: staged.digest().to_string(),
                    size: staged.size(),
                    ..Default::default()
                };
                generated.push(staged);
                desc
            }
        };
        Ok(ImageRecord {
            id: config.digest.to_string(),
            manifest,
            config_size: config.size,
            layers,
            doc,
            last_tag_time: None,
            removed: false,
        })
    }

    /// The images (with the names to save them under) that one `save` argument means: a
    /// repository without a tag means all its tags; an id means the image, untagged.
    fn save_targets(
        &self,
        name: &str,
        tags: &[(String, String)],
    ) -> Result<Vec<(ImageRecord, Option<Reference>)>, ImageError> {
        if let Ok(r) = Reference::parse(name)
            && r.tag.is_none()
            && r.digest.is_none()
            && !name.contains(':')
        {
            let mut out = Vec::new();
            for (key, id) in tags {
                if let Ok(t) = Reference::parse(key)
                    && t.name() == r.name()
                    && t.tag.is_some()
                    && t.digest.is_none()
                    && let Some(rec) = self.visible(id)?
                {
                    out.push((rec, Some(t)));
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
        let rec = self.resolve_record(name)?;
        let named = Reference::parse(name)
            .ok()
            .map(Reference::with_default_tag)
            .filter(|r| {
                r.digest.is_none() && tags.iter().any(|(k, id)| *k == r.key() && *id == rec.id)
            });
        Ok(vec![(rec, named)])
    }

    /// Writes the images `names` mean as one archive that is both a docker-archive and an
    /// OCI image layout.
    pub fn save(&self, names: &[String], out: &mut dyn Write) -> Result<(), ImageError> {
        if names.is_empty() {
            return Err(ImageError::Invalid("no image to save".into()));
        }
        // Everything is resolved before the first byte is written.
        let tags = self.tags()?;
        let mut images: Vec<(ImageRecord, Vec<Reference>)> = Vec::new();
        for name in names {
            for (rec, r) in self.save_targets(name, &tags)? {
                let slot = match images.iter().position(|(i, _)| i.id == rec.id) {
                    Some(i) => i,
                    None => {
                        images.push((rec, Vec::new()));
                        images.len() - 1
                    }
                };
                if let Some(r) = r
                    && !images[slot].1.contains(&r)
                {
                    images[slot].1.push(r);
                }
            }
        }
        let mut blobs: Vec<Digest> = Vec::new();
        for (rec, _) in &images {
            let mut add = |d: &str| -> Result<(), ImageError> {
                let d = Digest::parse(d)?;
                if !blobs.contains(&d) {
                    blobs.push(d);
                }
                Ok(())
            };
            for l in &rec.layers {
                add(&l.blob.digest)?;
            }
            add(&rec.id)?;
            add(&rec.manifest.digest)?;
        }
        // Open every blob first so a missing one fails before output starts.
        let mut files = Vec::new();
        for d in &blobs {
            files.push((d, self.content.open_blob(d)?, self.content.size(d)?));
        }

        let mut index = Index {
            schema_version: 2,
            media_type: Some(oci::OCI_INDEX.into()),
            manifests: Vec::new(),
        };
        let mut entries = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (rec, refs) in &images {
            let desc = Descriptor {
                media_type: rec.manifest.media_type.clone(),
                digest: rec.manifest.digest.clone(),
                size: rec.manifest.size,
                ..Default::default()
            };
            if refs.is_empty() {
                index.manifests.push(desc.clone());
            }
            let top = rec
                .layers
                .last()
                .map(|l| l.blob.digest.trim_start_matches("sha256:").to_string())
                .unwrap_or_default();
            for r in refs {
                let tag = r.tag.clone().unwrap_or_default();
                let mut d = desc.clone();
                d.annotations = Some(BTreeMap::from([
                    (oci::ANNOTATION_IMAGE_NAME.to_string(), r.key()),
                    (oci::ANNOTATION_REF_NAME.to_string(), tag.clone()),
                ]));
                index.manifests.push(d);
                repositories
                    .entry(r.familiar_name())
                    .or_default()
                    .insert(tag, top.clone());
            }
            entries.push(ArchiveEntry {
                config: format!("blobs/sha256/{}", rec.id_hex()),
                repo_tags: refs.iter().map(Reference::familiar).collect(),
                layers: rec
                    .layers
                    .iter()
                    .map(|l| {
                        format!(
                            "blobs/sha256/{}",
                            l.blob.digest.trim_start_matches("sha256:")
                        )
                    })
                    .collect(),
            });
        }

        let enc =
            |e: serde_json::Error| ImageError::Invalid(format!("encoding archive document: {e}"));
        let index = serde_json::to_vec(&index).map_err(enc)?;
        let entries = serde_json::to_vec(&entries).map_err(enc)?;
        let repositories = if repositories.is_empty() {
            None
        } else {
            Some(serde_json::to_vec(&repositories).map_err(enc)?)
        };

        let mut tar = tar::Builder::new(out);
        let write = |tar: &mut tar::Builder<&mut dyn Write>| -> io::Result<()> {
            append_dir(tar, "blobs/")?;
            append_dir(tar, "blobs/sha256/")?;
            for (d, file, size) in files {
                append_file(tar, &format!("blobs/sha256/{}", d.hex()), size, file)?;
            }
            append_bytes(tar, "index.json", &index)?;
            append_bytes(tar, "manifest.json", &entries)?;
            append_bytes(tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
            if let Some(r) = &repositories {
                append_bytes(tar, "repositories", r)?;
            }
            tar.finish()
        };
        write(&mut tar).map_err(io_ctx("writing archive"))
    }
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(mode);
    h.set_entry_type(kind);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn append_dir(tar: &mut tar::Builder<&mut dyn Write>, path: &str) -> io::Result<()> {
    let mut h = header(0, 0o755, tar::EntryType::Directory);
    tar.append_data(&mut h, path, io::empty())
}

fn append_file(
    tar: &mut tar::Builder<&mut dyn Write>,
    path: &str,
    size: u64,
    file: File,
) -> io::Result<()> {
    let mut h = header(size, 0o644, tar::EntryType::Regular);
    // The size in the header must be what follows: a blob that changed size is an error.
    tar.append_data(&mut h, path, file.take(size))
}

fn append_bytes(tar: &mut tar::Builder<&mut dyn Write>, path: &str, data: &[u8]) -> io::Result<()> {
    let mut h = header(data.len() as u64, 0o644, tar::EntryType::Regular);
    tar.append_data(&mut h, path, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_may_climb_but_not_out() {
        assert_eq!(link_key("a/layer.tar", "a", "../b.tar").unwrap(), "b.tar");
        assert_eq!(link_key("a/b/l", "a/b", "./../c").unwrap(), "a/c");
        assert!(link_key("a/l", "a", "../../x").is_err());
    }
}
