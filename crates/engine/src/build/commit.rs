//! `docker commit`: a container's overlay upper directory becomes a layer on top of its
//! image, with `--change` instructions applied to the config.

use std::path::Path;

use super::BuildError;
use crate::content::Digest;
use crate::image::config::{History, apply_changes};
use crate::image::{Image, ImageStore, Reference};

/// What `POST /commit` asks for besides the container.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// `repo[:tag]` to name the image.
    pub reference: Option<String>,
    pub author: Option<String>,
    pub comment: Option<String>,
    /// Dockerfile-style changes (CMD, ENV, ...).
    pub changes: Vec<String>,
    /// The container's config (Cmd, Env, ...) to start from, when the caller has it.
    pub config: Option<crate::image::ImageConfig>,
}

/// Commits the overlay upper directory `rw` of a container made from image `image_id`.
pub fn commit_container(
    images: &ImageStore,
    image_id: &str,
    rw: &Path,
    opts: &CommitOptions,
) -> Result<Image, BuildError> {
    let tags = match &opts.reference {
        Some(r) => {
            let r = Reference::parse(r)?;
            if r.digest.is_some() {
                return Err(BuildError::Invalid(
                    "refusing to create a tag with a digest reference".into(),
                ));
            }
            vec![r.with_default_tag()]
        }
        None => Vec::new(),
    };
    let base = images.resolve_any(image_id)?;
    let (mut doc, layers) = images.config_and_layers(&base);
    let mut config = opts
        .config
        .clone()
        .or_else(|| doc.config.clone())
        .unwrap_or_default();
    apply_changes(&mut config, &opts.changes)?;
    let lease = format!("commit-{}", crate::content::random_name());
    let parent = match layers.last() {
        Some(l) => Some(Digest::parse(&l.chain_id).map_err(crate::image::ImageError::from)?),
        None => None,
    };
    let (mut reader, writer) = std::io::pipe().map_err(|e| BuildError::io("making a pipe", e))?;
    let rw_dir = rw.to_path_buf();
    let layer = std::thread::scope(|s| {
        let w = s.spawn(move || super::layer::write_upper(&rw_dir, None, writer).map(|_| ()));
        let added = images.add_layer(&mut reader, parent.as_ref(), &lease);
        drop(reader);
        let wrote = w
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("layer writer panicked")));
        match (added, wrote) {
            (Ok(l), Ok(())) => Ok(l),
            (_, Err(e)) => Err(BuildError::io("writing the container's changes", e)),
            (Err(e), Ok(())) => Err(BuildError::from(e)),
        }
    });
    let layer = match layer {
        Ok(l) => l,
        Err(e) => {
            images.drop_lease(&lease);
            return Err(e);
        }
    };
    let when = crate::image::now();
    doc.config = Some(config);
    doc.created = Some(when.clone());
    if opts.author.is_some() {
        doc.author = opts.author.clone();
    }
    doc.comment = opts.comment.clone();
    doc.history.push(History {
        created: Some(when),
        author: opts.author.clone(),
        comment: opts.comment.clone(),
        ..Default::default()
    });
    let mut all = layers;
    all.push(layer);
    let image = images.commit_built(&doc, &all, &tags);
    images.drop_lease(&lease);
    Ok(image?)
}
