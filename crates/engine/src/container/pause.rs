//! `pause` / `unpause`: the cgroup freezer (v1 `freezer.state`, v2 `cgroup.freeze`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{Container, ContainerError, Status};
use crate::Engine;
use crate::meta::Table;

impl Engine {
    pub async fn pause(self: &Arc<Self>, key: &str) -> Result<(), ContainerError> {
        self.set_paused(key, true).await
    }

    pub async fn unpause(self: &Arc<Self>, key: &str) -> Result<(), ContainerError> {
        self.set_paused(key, false).await
    }

    async fn set_paused(self: &Arc<Self>, key: &str, pause: bool) -> Result<(), ContainerError> {
        let c = self.registry().lookup(key)?;
        let _op = c.op.lock().await;
        let (id, status) = {
            let r = c.record();
            (r.id.clone(), r.state.status)
        };
        if pause {
            status.guard_pause(&id)?;
        } else {
            status.guard_unpause(&id)?;
        }
        self.freezer(&id, pause).await?;
        let record = {
            let mut r = c.record();
            r.state.status = if pause {
                Status::Paused
            } else {
                Status::Running
            };
            r.clone()
        };
        self.meta.put(Table::Containers, &id, &record)?;
        Ok(())
    }

    /// Thaws a container without changing its recorded status (stop and rm of a paused one).
    pub(super) fn thaw(&self, c: &Arc<Container>) -> Result<(), ContainerError> {
        let id = c.id();
        let (file, value) = self.freezer_file(&id, false);
        std::fs::write(&file, value)?;
        Ok(())
    }

    fn freezer_file(&self, id: &str, freeze: bool) -> (PathBuf, &'static str) {
        let parent = self.cfg.cgroup_parent.trim_matches('/');
        let v1 = PathBuf::from(format!(
            "/sys/fs/cgroup/freezer/{parent}/{id}/freezer.state"
        ));
        if v1.exists() {
            (v1, if freeze { "FROZEN" } else { "THAWED" })
        } else {
            (
                PathBuf::from(format!("/sys/fs/cgroup/{parent}/{id}/cgroup.freeze")),
                if freeze { "1" } else { "0" },
            )
        }
    }

    async fn freezer(&self, id: &str, freeze: bool) -> Result<(), ContainerError> {
        let (file, value) = self.freezer_file(id, freeze);
        std::fs::write(&file, value)?;
        if file.ends_with("freezer.state") {
            // v1 freezing passes through FREEZING; wait until the kernel says it is done.
            for _ in 0..200 {
                if std::fs::read_to_string(&file)?.trim() == value {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            return Err(ContainerError::Conflict(format!(
                "container {id}: freezer did not reach {value}"
            )));
        }
        Ok(())
    }
}
