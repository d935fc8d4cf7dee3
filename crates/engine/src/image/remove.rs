//! `docker rmi` and `docker image prune`, with Docker's rules for untag versus delete, and
//! the garbage collection of blobs and snapshots no image needs any more.

use std::collections::HashSet;

use wharf_api::models::ImageDeleteResponseItem;

use super::{ImageError, ImageRecord, ImageStore, InUse, Reference, short};
use crate::content::Digest;
use crate::meta::{Change, Table};

fn untagged(r: &Reference) -> ImageDeleteResponseItem {
    ImageDeleteResponseItem {
        untagged: Some(r.familiar()),
        deleted: None,
    }
}

fn deleted(id: &str) -> ImageDeleteResponseItem {
    ImageDeleteResponseItem {
        untagged: None,
        deleted: Some(id.to_string()),
    }
}

/// Docker's test: all references are in one repository, with at most one tag.
fn is_single_reference(refs: &[Reference]) -> bool {
    if refs.len() <= 1 {
        return refs.len() == 1;
    }
    let mut tagged = refs.iter().filter(|r| r.digest.is_none());
    let single = match (tagged.next(), tagged.next()) {
        (_, Some(_)) => return false,
        (Some(t), None) => t,
        (None, None) => &refs[0],
    };
    let canonical: HashSet<String> = refs
        .iter()
        .filter(|r| r.digest.is_some())
        .map(Reference::name)
        .collect();
    canonical.len() == 1 && canonical.contains(&single.name())
}

/// A conflict as Docker words it; `hard` ones cannot be forced.
fn conflict(id: &str, hard: bool, why: &str) -> ImageError {
    let force = if hard {
        "cannot be forced"
    } else {
        "must be forced"
    };
    ImageError::Conflict(format!(
        "conflict: unable to delete {} ({force}) - {why}",
        short(id)
    ))
}

impl ImageStore {
    /// The references (tags and digests) naming image `id`.
    fn refs_of(&self, id: &str) -> Result<Vec<Reference>, ImageError> {
        Ok(self
            .tags()?
            .into_iter()
            .filter(|(_, i)| i == id)
            .filter_map(|(k, _)| Reference::parse(&k).ok())
            .collect())
    }

    /// Removes `name`: untags it when it is one of several names, deletes the image when
    /// it is the last (or an id was given). `in_use` says whether containers use an image id.
    pub fn remove(
        &self,
        name: &str,
        force: bool,
        in_use: &dyn Fn(&str) -> InUse,
    ) -> Result<Vec<ImageDeleteResponseItem>, ImageError> {
        let _g = self.lock();
        self.purge_removed(in_use)?;
        let record = self.resolve_record(name)?;
        let id = record.id.clone();
        let mut refs = self.refs_of(&id)?;
        // By reference when the name is one of the image's references; otherwise by id.
        let by_id = !Reference::parse(name)
            .map(Reference::with_default_tag)
            .is_ok_and(|r| refs.iter().any(|x| x.key() == r.key()));
        let mut items = Vec::new();
        let mut batch = Vec::new();
        let mut untag_only = false;

        if !by_id {
            let r = Reference::parse(name)?.with_default_tag();
            if !force
                && is_single_reference(&refs)
                && let InUse::Running(c) | InUse::Stopped(c) = in_use(&id)
            {
                return Err(ImageError::Conflict(format!(
                    "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
                    short(&c),
                    short(&id)
                )));
            }
            let r = refs
                .iter()
                .find(|x| x.key() == r.key())
                .cloned()
                .unwrap_or(r);
            batch.push(Change::Delete(Table::Tags, r.key()));
            items.push(untagged(&r));
            refs.retain(|x| x.key() != r.key());
            // The last tag of a repository takes that repository's digests with it.
            if r.digest.is_none()
                && !refs
                    .iter()
                    .any(|x| x.digest.is_none() && x.name() == r.name())
            {
                for d in refs
                    .iter()
                    .filter(|x| x.digest.is_some() && x.name() == r.name())
                {
                    batch.push(Change::Delete(Table::Tags, d.key()));
                    items.push(untagged(d));
                }
                refs.retain(|x| !(x.digest.is_some() && x.name() == r.name()));
            }
            if !refs.is_empty() {
                self.meta.apply(batch)?;
                return Ok(items);
            }
            untag_only = true;
        } else if is_single_reference(&refs) {
            match in_use(&id) {
                InUse::Running(c) => {
                    return Err(conflict(
                        &id,
                        true,
                        &format!("image is being used by running container {}", short(&c)),
                    ));
                }
                InUse::Stopped(c) if !force => {
                    return Err(conflict(
                        &id,
                        false,
                        &format!("image is being used by stopped container {}", short(&c)),
                    ));
                }
                _ => {}
            }
            for r in refs.drain(..) {
                batch.push(Change::Delete(Table::Tags, r.key()));
                items.push(untagged(&r));
            }
        }

        let usage = in_use(&id);
        let blocked = match &usage {
            InUse::Running(c) => Some(conflict(
                &id,
                true,
                &format!("image is being used by running container {}", short(c)),
            )),
            _ if !force && !refs.is_empty() => Some(conflict(
                &id,
                false,
                "image is referenced in multiple repositories",
            )),
            InUse::Stopped(c) if !force => Some(conflict(
                &id,
                false,
                &format!("image is being used by stopped container {}", short(c)),
            )),
            _ => None,
        };
        if let Some(err) = blocked {
            if untag_only {
                // The name is gone; the image stays (untagged) for the container using it.
                self.meta.apply(batch)?;
                return Ok(items);
            }
            return Err(err);
        }
        for r in refs.drain(..) {
            batch.push(Change::Delete(Table::Tags, r.key()));
            items.push(untagged(&r));
        }
        items.push(deleted(&id));
        if let InUse::Stopped(_) = usage {
            // A stopped container still needs the layers: keep them under a hidden record.
            let mut hidden = record;
            hidden.removed = true;
            batch.push(Change::put(Table::Images, id.clone(), &hidden)?);
            self.meta.apply(batch)?;
            return Ok(items);
        }
        batch.push(Change::Delete(Table::Images, id.clone()));
        self.meta.apply(batch)?;
        let (layers, _) = self.release(&record)?;
        items.extend(layers.iter().map(|c| deleted(c.as_str())));
        Ok(items)
    }

    /// Deletes images no container uses: the untagged ones, or with `all` every one.
    /// Returns what was untagged and deleted, and the bytes freed.
    pub fn prune(
        &self,
        all: bool,
        in_use: &dyn Fn(&str) -> InUse,
    ) -> Result<(Vec<ImageDeleteResponseItem>, u64), ImageError> {
        let _g = self.lock();
        let mut freed = self.purge_removed(in_use)?;
        let tags = self.tags()?;
        let mut items = Vec::new();
        for record in self.records()? {
            if record.removed {
                continue;
            }
            let refs: Vec<Reference> = tags
                .iter()
                .filter(|(_, i)| *i == record.id)
                .filter_map(|(k, _)| Reference::parse(k).ok())
                .collect();
            if (!all && !refs.is_empty()) || in_use(&record.id) != InUse::No {
                continue;
            }
            let mut batch = Vec::new();
            for r in &refs {
                batch.push(Change::Delete(Table::Tags, r.key()));
                items.push(untagged(r));
            }
            batch.push(Change::Delete(Table::Images, record.id.clone()));
            self.meta.apply(batch)?;
            items.push(deleted(&record.id));
            let (layers, bytes) = self.release(&record)?;
            items.extend(layers.iter().map(|c| deleted(c.as_str())));
            freed += bytes;
        }
        Ok((items, freed))
    }

    /// Drops hidden records whose containers are gone, with their layers.
    fn purge_removed(&self, in_use: &dyn Fn(&str) -> InUse) -> Result<u64, ImageError> {
        let mut freed = 0;
        for record in self.records()? {
            if record.removed && in_use(&record.id) == InUse::No {
                self.meta.delete(Table::Images, &record.id)?;
                freed += self.release(&record)?.1;
            }
        }
        Ok(freed)
    }

    /// After `record` left meta: deletes its snapshots and blobs that no other record uses.
    /// Returns the chain ids of the deleted snapshots and the bytes freed.
    fn release(&self, record: &ImageRecord) -> Result<(Vec<Digest>, u64), ImageError> {
        let (chains, blobs) = self.in_use_sets()?;
        let mut removed = Vec::new();
        let mut freed = 0;
        for layer in record.layers.iter().rev() {
            let chain = Digest::parse(&layer.chain_id)?;
            if !chains.contains(&chain) && self.snapshots.exists(&chain) {
                freed += self.snapshots.size(&chain);
                self.snapshots.remove(&chain)?;
                removed.push(chain);
            }
        }
        let mut own = vec![record.id.clone(), record.manifest.digest.clone()];
        own.extend(record.layers.iter().map(|l| l.blob.digest.clone()));
        for d in own {
            let d = Digest::parse(&d)?;
            if !blobs.contains(&d) && self.content.contains(&d) {
                freed += self.content.size(&d).unwrap_or(0);
                self.content.delete(&d)?;
            }
        }
        Ok((removed, freed))
    }

    /// The chain ids and blobs some record (hidden ones too) or lease refers to.
    pub(crate) fn in_use_sets(&self) -> Result<(HashSet<Digest>, HashSet<Digest>), ImageError> {
        let (mut chains, mut blobs) = super::lease::leased(&self.leases);
        for r in self.records()? {
            for l in &r.layers {
                chains.extend(Digest::parse(&l.chain_id).ok());
                blobs.extend(Digest::parse(&l.blob.digest).ok());
            }
            blobs.extend(Digest::parse(&r.id).ok());
            blobs.extend(Digest::parse(&r.manifest.digest).ok());
        }
        Ok((chains, blobs))
    }

    /// At open: deletes snapshots and blobs no record refers to (left by a crash between
    /// writing them and committing the metadata, or between a delete and its cleanup).
    pub(crate) fn collect_garbage(&self) -> Result<(), ImageError> {
        super::lease::expire(&self.leases)?;
        let (chains, blobs) = self.in_use_sets()?;
        for chain in self.snapshots.list()? {
            if !chains.contains(&chain) {
                self.snapshots.remove(&chain)?;
            }
        }
        for blob in self.content.list()? {
            if !blobs.contains(&blob) {
                self.content.delete(&blob)?;
            }
        }
        Ok(())
    }
}
