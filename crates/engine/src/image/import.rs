//! `docker import`: a root file system tar becomes a one-layer image.

use std::io::Read;

use super::config::{ConfigDoc, History, ImageConfig, RootFs, apply_changes, host_arch};
use super::oci::{self, Descriptor, Manifest};
use super::unpack::Compression;
use super::{
    Created, Image, ImageError, ImageRecord, ImageStore, LayerRecord, Reference, io_ctx, now,
};
use crate::meta::{Change, Table};

impl ImageStore {
    /// Imports a root file system tar (plain, gzip or zstd) as a new image, with `changes`
    /// (Dockerfile-style CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER,
    /// VOLUME, WORKDIR) applied to its config and tagged `reference` when given.
    pub fn import(
        &self,
        rootfs_tar: &mut dyn Read,
        changes: &[String],
        reference: Option<&str>,
        message: Option<&str>,
    ) -> Result<Image, ImageError> {
        // Everything that can be refused without reading the input comes first.
        let name = match reference {
            Some(r) => {
                let r = Reference::parse(r)?;
                if r.digest.is_some() {
                    return Err(ImageError::Invalid(
                        "refusing to create a tag with a digest reference".into(),
                    ));
                }
                Some(r.with_default_tag())
            }
            None => None,
        };
        let mut config = ImageConfig::default();
        apply_changes(&mut config, changes)?;

        let layer = self.content.stage_reader(rootfs_tar, None)?;
        let mut head = [0u8; 4];
        let n = std::fs::File::open(layer.path())
            .and_then(|mut f| f.read(&mut head))
            .map_err(io_ctx("reading imported layer"))?;
        let compression = Compression::detect(&head[..n]);

        let _g = self.lock();
        let mut created = Created::default();
        let result = (|| {
            let (diff_id, chain, size) =
                self.ensure_layer(layer.path(), None, None, false, &mut created)?;
            let when = now();
            let comment = message.unwrap_or("Imported from -").to_string();
            let doc = ConfigDoc {
                architecture: Some(host_arch().into()),
                os: Some("linux".into()),
                created: Some(when.clone()),
                comment: Some(comment.clone()),
                config: Some(config),
                rootfs: RootFs {
                    typ: "layers".into(),
                    diff_ids: vec![diff_id.to_string()],
                },
                history: vec![History {
                    created: Some(when),
                    comment: Some(comment),
                    ..Default::default()
                }],
                ..Default::default()
            };
            let config_bytes = serde_json::to_vec(&doc)
                .map_err(|e| ImageError::Invalid(format!("encoding image config: {e}")))?;
            let config_blob = self.content.stage_bytes(&config_bytes, None)?;
            let layer_desc = Descriptor {
                media_type: compression.oci_layer_type().into(),
                digest: layer.digest().to_string(),
                size: layer.size(),
                ..Default::default()
            };
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(oci::OCI_MANIFEST.into()),
                config: Descriptor {
                    media_type: oci::OCI_CONFIG.into(),
                    digest: config_blob.digest().to_string(),
                    size: config_blob.size(),
                    ..Default::default()
                },
                layers: vec![layer_desc.clone()],
            };
            let manifest_bytes = serde_json::to_vec(&manifest)
                .map_err(|e| ImageError::Invalid(format!("encoding manifest: {e}")))?;
            let manifest_blob = self.content.stage_bytes(&manifest_bytes, None)?;
            let record = ImageRecord {
                id: config_blob.digest().to_string(),
                manifest: Descriptor {
                    media_type: oci::OCI_MANIFEST.into(),
                    digest: manifest_blob.digest().to_string(),
                    size: manifest_blob.size(),
                    ..Default::default()
                },
                config_size: config_blob.size(),
                layers: vec![LayerRecord {
                    blob: layer_desc,
                    diff_id: diff_id.to_string(),
                    chain_id: chain.to_string(),
                    size,
                }],
                doc,
                last_tag_time: name.as_ref().map(|_| now()),
                removed: false,
            };
            let mut batch = vec![Change::put(Table::Images, record.id.clone(), &record)?];
            if let Some(r) = &name {
                batch.push(Change::put(Table::Tags, r.key(), &record.id)?);
            }
            self.commit_blobs(vec![config_blob, manifest_blob], &mut created)?;
            Ok((record, batch))
        })();
        let (record, batch) = match result {
            Ok(v) => v,
            Err(e) => {
                self.roll_back(created);
                return Err(e);
            }
        };
        // The layer blob is committed last, with the metadata: until then nothing refers to it.
        let r = self
            .commit_blobs(vec![layer], &mut created)
            .and_then(|()| Ok(self.meta.apply(batch)?));
        if let Err(e) = r {
            self.roll_back(created);
            return Err(e);
        }
        Ok(self.image(record, &self.tags()?))
    }
}
