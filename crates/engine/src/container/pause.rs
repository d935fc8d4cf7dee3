//! `pause` / `unpause`: the cgroup freezer, through the runtime.

use std::sync::Arc;

use wharf_runtime::cgroup::{self, Cgroup};

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
        self.cgroup_of(&c.id()).freeze(false)?;
        Ok(())
    }

    fn cgroup_of(&self, id: &str) -> Cgroup {
        Cgroup::system(cgroup::container_path(&self.cfg.cgroup_parent, id))
    }

    /// The runtime's freezer (v1 `freezer.state`, v2 `cgroup.freeze`); freezing on v1 waits
    /// for the kernel to finish, so it runs on a blocking thread.
    async fn freezer(&self, id: &str, freeze: bool) -> Result<(), ContainerError> {
        let cg = self.cgroup_of(id);
        tokio::task::spawn_blocking(move || cg.freeze(freeze))
            .await
            .map_err(|e| ContainerError::Io(std::io::Error::other(e)))??;
        Ok(())
    }
}
