//! `container prune`: remove every stopped container that matches the filters.

use std::sync::Arc;

use wharf_api::models::ContainerPruneResponse;

use super::{ContainerError, Filters, Status};
use crate::Engine;

impl Engine {
    pub async fn prune(
        self: &Arc<Self>,
        filters: &Filters,
    ) -> Result<ContainerPruneResponse, ContainerError> {
        let mut deleted = Vec::new();
        let mut reclaimed: i64 = 0;
        let all = self.registry().all();
        for c in all {
            let r = c.snapshot();
            if !matches!(
                r.state.status,
                Status::Exited | Status::Created | Status::Dead
            ) {
                continue;
            }
            let labels = r.config.labels.clone().unwrap_or_default();
            let label_ok =
                filters
                    .get("label")
                    .into_iter()
                    .flatten()
                    .all(|l| match l.split_once('=') {
                        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
                        None => labels.contains_key(l.as_str()),
                    });
            if !label_ok {
                continue;
            }
            let size = dir_size(&self.container_paths(&r.id).upper());
            if self.remove(&r.id, false, false).await.is_ok() {
                reclaimed += i64::try_from(size).unwrap_or(i64::MAX);
                deleted.push(r.id);
            }
        }
        Ok(ContainerPruneResponse {
            containers_deleted: Some(deleted),
            space_reclaimed: Some(reclaimed),
        })
    }
}

/// Bytes used by the files under `dir` (not following symlinks).
pub(crate) fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
