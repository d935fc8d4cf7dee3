//! What the registry client (`crate::distribution`) needs from the store: its blobs and
//! snapshots, committing a pulled image, and the records and names a push reads and adds.

use super::config::ConfigDoc;
use super::oci::Descriptor;
use super::{Created, Image, ImageError, ImageRecord, ImageStore, LayerRecord, Reference, now};
use crate::content::{ContentStore, Digest, Staged};
use crate::meta::{Change, Table};
use crate::snapshot::Snapshots;

pub(crate) use super::chain_id;
pub(crate) use super::unpack::{Compression, unpack};

/// A pulled image, ready to be recorded: its layers are committed (under a lease), its
/// manifest and config blobs staged.
pub(crate) struct Pulled {
    pub manifest: Descriptor,
    pub config_size: u64,
    pub doc: ConfigDoc,
    pub id: Digest,
    pub layers: Vec<LayerRecord>,
    /// Tags and repository digests to point at the image.
    pub names: Vec<Reference>,
    pub blobs: Vec<Staged>,
}

impl ImageStore {
    pub(crate) fn content(&self) -> &ContentStore {
        &self.content
    }

    pub(crate) fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// The image a full reference key (`docker.io/library/busybox:latest`) names, if any.
    pub(crate) fn tagged(&self, key: &str) -> Result<Option<ImageRecord>, ImageError> {
        match self.meta.get::<String>(Table::Tags, key)? {
            Some(id) => self.visible(&id),
            None => Ok(None),
        }
    }

    /// Whether image `id` is in the store (and not removed).
    pub(crate) fn has_image(&self, id: &str) -> Result<bool, ImageError> {
        Ok(self.visible(id)?.is_some())
    }

    /// Every tag of repository `name` (`docker.io/library/busybox`), with its image.
    pub(crate) fn repository_tags(
        &self,
        name: &str,
    ) -> Result<Vec<(Reference, ImageRecord)>, ImageError> {
        let mut out = Vec::new();
        for (key, id) in self.tags()? {
            if let Ok(r) = Reference::parse(&key)
                && r.name() == name
                && r.tag.is_some()
                && r.digest.is_none()
                && let Some(rec) = self.visible(&id)?
            {
                out.push((r, rec));
            }
        }
        out.sort_by_key(|a| a.0.key());
        Ok(out)
    }

    /// Points `names` at image `id` (a push records the repository digest it made).
    pub(crate) fn add_names(&self, id: &str, names: &[Reference]) -> Result<(), ImageError> {
        let _g = self.lock();
        if self.visible(id)?.is_none() {
            return Err(ImageError::NotFound(id.to_string()));
        }
        let batch = names
            .iter()
            .map(|r| Change::put(Table::Tags, r.key(), &id))
            .collect::<Result<Vec<_>, _>>()?;
        self.meta.apply(batch)?;
        Ok(())
    }

    /// Records a pulled image and its names in one batch. An image already in the store
    /// keeps its record (its blobs are as good) and gains the names. Returns the image and
    /// the id the first name pointed at before, if any.
    pub(crate) fn commit_pulled(
        &self,
        pulled: Pulled,
    ) -> Result<(Image, Option<String>), ImageError> {
        let _g = self.lock();
        let id = pulled.id.to_string();
        let previous = match pulled.names.first() {
            Some(r) => self.meta.get::<String>(Table::Tags, &r.key())?,
            None => None,
        };
        let mut record = match self.visible(&id)? {
            Some(existing) => existing,
            None => ImageRecord {
                id: id.clone(),
                manifest: pulled.manifest,
                config_size: pulled.config_size,
                layers: pulled.layers,
                doc: pulled.doc,
                last_tag_time: None,
                removed: false,
            },
        };
        if pulled.names.iter().any(|r| r.digest.is_none()) {
            record.last_tag_time = Some(now());
        }
        let mut created = Created::default();
        let result = (|| {
            self.commit_blobs(pulled.blobs, &mut created)?;
            let mut batch = vec![Change::put(Table::Images, id.clone(), &record)?];
            for r in &pulled.names {
                batch.push(Change::put(Table::Tags, r.key(), &id)?);
            }
            self.meta.apply(batch)?;
            Ok(())
        })();
        if let Err(e) = result {
            self.roll_back(created);
            return Err(e);
        }
        Ok((self.image(record, &self.tags()?), previous))
    }
}
