//! `rm`: kill when forced, then remove the overlay, files, record and name.

use std::sync::Arc;

use nix::sys::signal::Signal;

use super::{ContainerError, Status};
use crate::meta::Table;
use crate::{Engine, snapshot};

impl Engine {
    pub async fn remove(
        self: &Arc<Self>,
        key: &str,
        force: bool,
        _volumes: bool,
    ) -> Result<(), ContainerError> {
        let c = self.registry().lookup(key)?;
        let _op = c.op.lock().await;
        let (status, id) = {
            let r = c.record();
            (r.state.status, r.id.clone())
        };
        status.guard_remove(&id, force)?;
        if status.is_running() {
            let mut exits = c.lifecycle.subscribe();
            exits.borrow_and_update();
            self.signal(&c, Signal::SIGKILL, true)?;
            if status == Status::Paused {
                self.thaw(&c)?;
            }
            let _ = exits.changed().await;
        }
        c.record().state.status = Status::Removing;
        let mut net = c.record().network.clone();
        self.networks.release(&id, &mut net).await;
        let paths = self.container_paths(&id);
        snapshot::unmount(&paths.rootfs())?;
        for dir in [&paths.dir, &paths.run_dir] {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    c.record().state.status = Status::Dead;
                    return Err(e.into());
                }
            }
        }
        // Its directory is gone: a restarted daemon drops a record that outlived it (recover).
        self.meta.delete_soon(Table::Containers, &id)?;
        self.registry().remove(&id);
        self.forget_execs(&id);
        c.fail_pending_attaches(&ContainerError::NotFound(id));
        c.lifecycle.send_modify(|l| l.removed = true);
        Ok(())
    }
}
