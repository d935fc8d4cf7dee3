//! `GET /system/df`: what images, containers and their layers take on disk.

use std::collections::HashMap;
use std::sync::Arc;

use wharf_api::models::{ContainerSummary, ImageSummary};

use crate::Engine;
use crate::container::ContainerError;
use crate::image::ImageError;

/// Disk usage as `docker system df` shows it (API < 1.52 shape).
#[derive(Debug, Default)]
pub struct DiskUsage {
    /// Bytes of all distinct unpacked layers.
    pub layers_size: i64,
    /// Every image, with `Size`, `SharedSize` (its layers other images use too) and
    /// `Containers` (how many use it) filled in.
    pub images: Vec<ImageSummary>,
    /// Every container, with `SizeRw` (its writable layer) and `SizeRootFs`.
    pub containers: Vec<ContainerSummary>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiskUsageError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Container(#[from] ContainerError),
}

impl Engine {
    pub fn disk_usage(self: &Arc<Self>) -> Result<DiskUsage, DiskUsageError> {
        let images = self.images.list()?;
        let layers: Vec<Vec<(String, u64)>> =
            images.iter().map(|i| self.images.layer_sizes(i)).collect();
        let mut users: HashMap<&str, usize> = HashMap::new();
        let mut distinct: HashMap<&str, u64> = HashMap::new();
        for image_layers in &layers {
            for (chain, size) in image_layers {
                *users.entry(chain.as_str()).or_default() += 1;
                distinct.insert(chain.as_str(), *size);
            }
        }
        let containers = self.list(true, None, &crate::container::Filters::default())?;
        let mut per_image: HashMap<String, i64> = HashMap::new();
        for c in &containers {
            *per_image
                .entry(c.image_id.clone().unwrap_or_default())
                .or_default() += 1;
        }
        let mut out = DiskUsage {
            layers_size: to_i64(distinct.values().sum()),
            ..DiskUsage::default()
        };
        for (image, image_layers) in images.iter().zip(&layers) {
            let mut s = self.images.summary(image);
            s.shared_size = to_i64(
                image_layers
                    .iter()
                    .filter(|(chain, _)| users.get(chain.as_str()).copied().unwrap_or(0) > 1)
                    .map(|(_, size)| size)
                    .sum(),
            );
            s.containers = per_image.get(&image.id).copied().unwrap_or(0);
            out.images.push(s);
        }
        let sizes: HashMap<String, u64> = images.iter().map(|i| (i.id.clone(), i.size)).collect();
        for mut c in containers {
            let id = c.id.clone().unwrap_or_default();
            let rw = to_i64(crate::container::dir_size(
                &self.container_paths(&id).upper(),
            ));
            let image = c
                .image_id
                .as_deref()
                .and_then(|i| sizes.get(i))
                .copied()
                .unwrap_or(0);
            c.size_rw = Some(rw);
            c.size_root_fs = Some(rw.saturating_add(to_i64(image)));
            out.containers.push(c);
        }
        Ok(out)
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
