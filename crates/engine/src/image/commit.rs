//! Images made here rather than loaded or pulled: a layer tar added on top of a parent's
//! layers, and a config plus layers committed as an image (the builder, `docker commit`).
//!
//! Layers a build makes are kept from garbage collection by a lease (see `lease.rs`) named
//! by the caller, until an image record refers to them or the lease expires.

use std::io::Read;

use super::config::ConfigDoc;
use super::oci::{self, Descriptor, Manifest};
use super::{Created, Image, ImageError, ImageRecord, ImageStore, LayerRecord, Reference, now};
use crate::content::Digest;
use crate::meta::{Change, Table};

/// The media type of the uncompressed layers this file writes.
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

fn touch(path: &std::path::Path) -> Result<(), ImageError> {
    match std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(super::io_ctx(format!("writing lease {}", path.display()))(
            e,
        )),
    }
}

impl ImageStore {
    /// Writes the names of a layer's blob and snapshot into lease `lease` (a directory
    /// name under the lease directory); called with the store lock held.
    fn lease_layer(&self, lease: &str, layer: &LayerRecord) -> Result<(), ImageError> {
        let dir = self.leases.join(lease);
        std::fs::create_dir_all(&dir)
            .map_err(super::io_ctx(format!("creating lease {}", dir.display())))?;
        let blob = Digest::parse(&layer.blob.digest)?;
        let chain = Digest::parse(&layer.chain_id)?;
        touch(&dir.join(format!("blob-{}", blob.hex())))?;
        touch(&dir.join(format!("snap-{}", chain.hex())))
    }

    /// Adds the uncompressed layer tar `tar` on top of the layer chain `parent`, keeping
    /// its blob and snapshot under lease `lease`. A layer already present is not unpacked
    /// again.
    pub(crate) fn add_layer(
        &self,
        tar: &mut dyn Read,
        parent: Option<&Digest>,
        lease: &str,
    ) -> Result<LayerRecord, ImageError> {
        let staged = self.content.stage_reader(tar, None)?;
        let diff_id = staged.digest().clone();
        let size_blob = staged.size();
        let _g = self.lock();
        let mut created = Created::default();
        let result = (|| {
            let (diff_id, chain, size) =
                self.ensure_layer(staged.path(), Some(&diff_id), parent, false, &mut created)?;
            let record = LayerRecord {
                blob: Descriptor {
                    media_type: LAYER_TAR.into(),
                    digest: diff_id.to_string(),
                    size: size_blob,
                    ..Default::default()
                },
                diff_id: diff_id.to_string(),
                chain_id: chain.to_string(),
                size,
            };
            self.commit_blobs(vec![staged], &mut created)?;
            self.lease_layer(lease, &record)?;
            Ok(record)
        })();
        if result.is_err() {
            self.roll_back(created);
        }
        result
    }

    /// Puts existing layers under lease `lease` too (a cache hit keeps what it reuses).
    pub(crate) fn lease_layers(
        &self,
        lease: &str,
        layers: &[LayerRecord],
    ) -> Result<(), ImageError> {
        let _g = self.lock();
        for l in layers {
            self.lease_layer(lease, l)?;
        }
        let dir = self.leases.join(lease);
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.set_modified(std::time::SystemTime::now());
        }
        Ok(())
    }

    /// Removes lease `lease` (what it kept goes at the next collection unless a record or
    /// another lease needs it).
    pub(crate) fn drop_lease(&self, lease: &str) {
        let _g = self.lock();
        let _ = std::fs::remove_dir_all(self.leases.join(lease));
    }

    /// The names of the leases on disk.
    pub(crate) fn lease_names(&self) -> Vec<String> {
        std::fs::read_dir(&self.leases)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether an image record with this id exists (hidden ones included).
    pub(crate) fn has_record(&self, id: &str) -> bool {
        matches!(self.meta.get::<ImageRecord>(Table::Images, id), Ok(Some(_)))
    }

    /// Whether every layer's blob and snapshot is still in the store.
    pub(crate) fn layers_present(&self, layers: &[LayerRecord]) -> bool {
        layers.iter().all(|l| {
            let (Ok(blob), Ok(chain)) = (Digest::parse(&l.blob.digest), Digest::parse(&l.chain_id))
            else {
                return false;
            };
            self.content.contains(&blob) && self.snapshots.exists(&chain)
        })
    }

    /// The snapshot directories of `layers`, top layer first.
    pub(crate) fn layer_dirs(
        &self,
        layers: &[LayerRecord],
    ) -> Result<Vec<std::path::PathBuf>, ImageError> {
        let mut out = Vec::new();
        for l in layers.iter().rev() {
            out.push(self.snapshots.fs_dir(&Digest::parse(&l.chain_id)?));
        }
        Ok(out)
    }

    /// Commits `doc` over `layers` (already in the store) as an image named `tags`. The
    /// same config gives the same id: an existing image only gains the names.
    pub(crate) fn commit_built(
        &self,
        doc: &ConfigDoc,
        layers: &[LayerRecord],
        tags: &[Reference],
    ) -> Result<Image, ImageError> {
        let (doc, config_bytes) = built_config(doc, layers)?;
        let config_blob = self.content.stage_bytes(&config_bytes, None)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::OCI_MANIFEST.into()),
            config: Descriptor {
                media_type: oci::OCI_CONFIG.into(),
                digest: config_blob.digest().to_string(),
                size: config_blob.size(),
                ..Default::default()
            },
            layers: layers.iter().map(|l| l.blob.clone()).collect(),
        };
        let manifest_bytes = serde_json::to_vec(&manifest)
            .map_err(|e| ImageError::Invalid(format!("encoding manifest: {e}")))?;
        let manifest_blob = self.content.stage_bytes(&manifest_bytes, None)?;
        let id = config_blob.digest().to_string();

        let _g = self.lock();
        if !self.layers_present(layers) {
            return Err(ImageError::Invalid(
                "a layer of the image was removed while it was being built".into(),
            ));
        }
        let mut record = match self.meta.get::<ImageRecord>(Table::Images, &id)? {
            Some(r) => r,
            None => ImageRecord {
                id: id.clone(),
                manifest: Descriptor {
                    media_type: oci::OCI_MANIFEST.into(),
                    digest: manifest_blob.digest().to_string(),
                    size: manifest_blob.size(),
                    ..Default::default()
                },
                config_size: config_blob.size(),
                layers: layers.to_vec(),
                doc,
                last_tag_time: None,
                removed: false,
            },
        };
        record.removed = false;
        if !tags.is_empty() {
            record.last_tag_time = Some(now());
        }
        let mut created = Created::default();
        let result = (|| {
            self.commit_blobs(vec![config_blob, manifest_blob], &mut created)?;
            let mut batch = vec![Change::put(Table::Images, id.clone(), &record)?];
            for r in tags {
                batch.push(Change::put(Table::Tags, r.key(), &id)?);
            }
            self.meta.apply(batch)?;
            Ok(())
        })();
        if let Err(e) = result {
            self.roll_back(created);
            return Err(e);
        }
        Ok(self.image(record, &self.tags()?))
    }

    /// The id [`ImageStore::commit_built`] gives `doc` over `layers`.
    pub(crate) fn built_id(doc: &ConfigDoc, layers: &[LayerRecord]) -> Result<String, ImageError> {
        Ok(Digest::of(&built_config(doc, layers)?.1).to_string())
    }

    /// Deletes the record of an image made for one build step (a RUN's container image);
    /// its layers stay while a lease or another record keeps them.
    pub(crate) fn drop_step_image(&self, id: &str) -> Result<(), ImageError> {
        let _g = self.lock();
        let Some(record) = self.meta.get::<ImageRecord>(Table::Images, id)? else {
            return Ok(());
        };
        let tagged = self.tags()?.iter().any(|(_, i)| i == id);
        if tagged {
            return Ok(());
        }
        self.meta.delete(Table::Images, id)?;
        let (_, blobs) = self.in_use_sets()?;
        for d in [record.id.as_str(), record.manifest.digest.as_str()] {
            let d = Digest::parse(d)?;
            if !blobs.contains(&d) {
                self.content.delete(&d)?;
            }
        }
        Ok(())
    }

    /// The image `name` means, or the (possibly hidden) record with that id: a container's
    /// image may have been removed with force after the container was made.
    pub fn resolve_any(&self, name: &str) -> Result<Image, ImageError> {
        if let Ok(i) = self.resolve(name) {
            return Ok(i);
        }
        match self.meta.get::<ImageRecord>(Table::Images, name)? {
            Some(r) => Ok(self.image(r, &self.tags()?)),
            None => Err(ImageError::NotFound(name.to_string())),
        }
    }

    /// The record of image `id` as the builder reuses it: its config and layers.
    pub(crate) fn config_and_layers(&self, image: &Image) -> (ConfigDoc, Vec<LayerRecord>) {
        (image.record.doc.clone(), image.record.layers.clone())
    }
}

/// `doc` with its rootfs set to `layers`, and its bytes.
fn built_config(
    doc: &ConfigDoc,
    layers: &[LayerRecord],
) -> Result<(ConfigDoc, Vec<u8>), ImageError> {
    let mut doc = doc.clone();
    doc.rootfs.typ = "layers".into();
    doc.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.clone()).collect();
    let bytes = serde_json::to_vec(&doc)
        .map_err(|e| ImageError::Invalid(format!("encoding image config: {e}")))?;
    Ok((doc, bytes))
}
