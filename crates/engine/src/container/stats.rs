//! `stats`: cgroup counters in Docker's stats shape.

use std::sync::Arc;

use wharf_api::models::ContainerStatsResponse;

use super::ContainerError;
use crate::Engine;

impl Engine {
    pub async fn stats(
        self: &Arc<Self>,
        key: &str,
    ) -> Result<ContainerStatsResponse, ContainerError> {
        let c = self.registry().lookup(key)?;
        let r = c.snapshot();
        Ok(ContainerStatsResponse {
            id: Some(r.id.clone()),
            name: Some(format!("/{}", r.name)),
            read: Some(crate::util::now_rfc3339()),
            ..Default::default()
        })
    }
}
