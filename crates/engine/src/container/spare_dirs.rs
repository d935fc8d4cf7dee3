//! Container directories made ahead of need. `<root>/containers` is an ext4 top directory, so
//! each new directory in it is placed by the Orlov allocator: 0.2 ms per mkdir here, and now
//! and then several milliseconds when it reads a block group's bitmaps. A create takes a
//! ready directory (with `rw`, `work` and `merged`) by a rename instead, and a blocking thread
//! makes the next one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Prefix of a ready, unused container directory.
pub(super) const SPARE: &str = ".spare-";
const KEEP: usize = 2;
const SUBDIRS: [&str; 3] = ["rw", "work", "merged"];

pub(crate) struct SpareDirs {
    parent: PathBuf,
    ready: Arc<Mutex<Vec<PathBuf>>>,
    filling: Arc<AtomicBool>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn make_spare(parent: &Path) -> std::io::Result<PathBuf> {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = parent.join(format!("{SPARE}{}-{n}", std::process::id()));
    std::fs::create_dir(&dir)?;
    for sub in SUBDIRS {
        std::fs::create_dir(dir.join(sub))?;
    }
    Ok(dir)
}

impl SpareDirs {
    pub(crate) fn new(parent: PathBuf) -> SpareDirs {
        SpareDirs {
            parent,
            ready: Arc::default(),
            filling: Arc::default(),
        }
    }

    /// Makes the container directory `dir` with its `rw`, `work` and `merged`.
    pub(super) fn make(&self, dir: &Path) -> std::io::Result<()> {
        let spare = self.ready.lock().ok().and_then(|mut r| r.pop());
        self.refill();
        if let Some(spare) = spare
            && std::fs::rename(&spare, dir).is_ok()
        {
            return Ok(());
        }
        for sub in SUBDIRS {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        Ok(())
    }

    /// Tops the ready list up on a blocking thread. Only an optimisation: failures are
    /// ignored, and a daemon that stops leaves spares that `sweep` deletes at the next start.
    fn refill(&self) {
        if self.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let (parent, ready, filling) = (
            self.parent.clone(),
            self.ready.clone(),
            self.filling.clone(),
        );
        tokio::task::spawn_blocking(move || {
            while ready.lock().map(|r| r.len() < KEEP).unwrap_or(false) {
                match make_spare(&parent) {
                    Ok(dir) => {
                        if let Ok(mut r) = ready.lock() {
                            r.push(dir);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "making a spare container directory");
                        break;
                    }
                }
            }
            filling.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn made_dirs_have_their_subdirectories_and_spares_follow() {
        let tmp = tempfile::tempdir().unwrap();
        let spares = SpareDirs::new(tmp.path().to_path_buf());
        spares.make(&tmp.path().join("a")).unwrap();
        for _ in 0..200 {
            if spares.ready.lock().unwrap().len() == KEEP {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(spares.ready.lock().unwrap().len(), KEEP);
        spares.make(&tmp.path().join("b")).unwrap();
        for name in ["a", "b"] {
            for sub in SUBDIRS {
                assert!(tmp.path().join(name).join(sub).is_dir());
            }
        }
    }
}
