//! `rm`: kill when forced, then remove the overlay, files, record and name.

use std::path::{Path, PathBuf};
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
        // Renamed aside at once and deleted in the background: deleting the tree (the
        // overlay's upper and work dirs among it) took most of a short `run --rm`'s teardown,
        // and nothing waits on it. A crash leaves only `.removing-*` names, swept at start.
        let mut aside = Vec::new();
        for dir in [&paths.dir, &paths.run_dir] {
            let to = removing_path(dir);
            match std::fs::rename(dir, &to) {
                Ok(()) => aside.push(to),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    c.record().state.status = Status::Dead;
                    return Err(e.into());
                }
            }
        }
        delete_in_background(aside);
        // Its directory is gone: a restarted daemon drops a record that outlived it (recover).
        self.meta.delete_soon(Table::Containers, &id)?;
        self.registry().remove(&id);
        self.forget_execs(&id);
        c.fail_pending_attaches(&ContainerError::NotFound(id));
        c.lifecycle.send_modify(|l| l.removed = true);
        Ok(())
    }
}

/// Prefix of a removed container's directories while they are deleted.
const REMOVING: &str = ".removing-";

fn removing_path(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    dir.with_file_name(format!("{REMOVING}{name}"))
}

fn delete_in_background(dirs: Vec<PathBuf>) {
    if dirs.is_empty() {
        return;
    }
    tokio::task::spawn_blocking(move || {
        for dir in dirs {
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %e, "deleting a removed container's files");
            }
        }
    });
}

/// Deletes what a crash or a stop left under `containers_dir`: removals cut short
/// (`.removing-*`), unused spare directories (`.spare-*`), and, when `recorded` is given, container directories no record names (a
/// create whose record a crash lost).
pub(crate) fn sweep(containers_dir: &Path, recorded: Option<&std::collections::HashSet<String>>) {
    let Ok(entries) = std::fs::read_dir(containers_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let unrecorded = recorded.is_some_and(|known| {
            name.len() == 64
                && name.bytes().all(|b| b.is_ascii_hexdigit())
                && !known.contains(&name)
        });
        if name.starts_with(REMOVING) || name.starts_with(super::spare_dirs::SPARE) || unrecorded {
            let dir = e.path();
            // A rootfs still mounted there (a crash between mount and unmount) goes first.
            let _ = snapshot::unmount(&dir.join("merged"));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_dirs_are_renamed_beside_themselves() {
        assert_eq!(
            removing_path(Path::new("/r/containers/abc")),
            Path::new("/r/containers/.removing-abc")
        );
    }

    #[test]
    fn unrecorded_container_dirs_are_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let known = "a".repeat(64);
        let lost = "b".repeat(64);
        for d in [&known, &lost, &"not-an-id".to_string()] {
            std::fs::create_dir_all(tmp.path().join(d).join("rw")).unwrap();
        }
        let recorded = std::collections::HashSet::from([known.clone()]);
        sweep(tmp.path(), Some(&recorded));
        assert!(tmp.path().join(&known).is_dir());
        assert!(!tmp.path().join(&lost).exists());
        assert!(tmp.path().join("not-an-id").is_dir());
    }

    #[test]
    fn sweeping_deletes_only_removed_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        let kept = tmp.path().join("abc");
        let left = tmp.path().join(".removing-def");
        std::fs::create_dir_all(kept.join("rw")).unwrap();
        std::fs::create_dir_all(left.join("rw/x")).unwrap();
        std::fs::write(left.join("rw/x/f"), b"data").unwrap();
        sweep(tmp.path(), None);
        assert!(kept.join("rw").is_dir());
        assert!(!left.exists());
    }
}
