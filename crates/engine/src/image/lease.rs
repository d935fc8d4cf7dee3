//! Leases: blobs and snapshots that an unfinished operation (a pull) has verified and
//! committed before any image record refers to them.
//!
//! Garbage collection deletes what no record refers to; a lease keeps these alive so that an
//! interrupted pull (a dropped request, a killed daemon) resumes from what it had verified.
//! A lease is a directory `<root>/content/leases/<name>/` with one empty file per item
//! (`blob-<hex>`, `snap-<hex>`): adding an item is one file creation, never a rewrite. A lease
//! untouched for a day is expired at the next open, as containerd expires its pull leases.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{Created, ImageError, ImageStore, io_ctx};
use crate::content::{Digest, is_hex64};

const EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// An open lease. Dropping it keeps it on disk (that is the point); [`ImageStore::lease_end`]
/// and [`ImageStore::lease_abandon`] remove it.
#[derive(Debug)]
pub(crate) struct Lease {
    dir: PathBuf,
}

/// The items every lease on disk holds: (snapshot chain ids, blobs).
pub(crate) fn leased(leases: &Path) -> (HashSet<Digest>, HashSet<Digest>) {
    let mut chains = HashSet::new();
    let mut blobs = HashSet::new();
    let Ok(dirs) = std::fs::read_dir(leases) else {
        return (chains, blobs);
    };
    for dir in dirs.flatten() {
        let Ok(items) = std::fs::read_dir(dir.path()) else {
            continue;
        };
        for item in items.flatten() {
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            let (set, hex) = if let Some(hex) = name.strip_prefix("blob-") {
                (&mut blobs, hex)
            } else if let Some(hex) = name.strip_prefix("snap-") {
                (&mut chains, hex)
            } else {
                continue;
            };
            if is_hex64(hex)
                && let Ok(d) = Digest::parse(&format!("sha256:{hex}"))
            {
                set.insert(d);
            }
        }
    }
    (chains, blobs)
}

/// Removes leases not touched for [`EXPIRY`], except the builder's cache leases.
pub(crate) fn expire(leases: &Path) -> Result<(), ImageError> {
    let Ok(dirs) = std::fs::read_dir(leases) else {
        return Ok(());
    };
    let now = SystemTime::now();
    for dir in dirs.flatten() {
        // A built image's cache lease lives as long as the image; the builder drops it.
        if dir.file_name().to_string_lossy().starts_with("buildcache-") {
            continue;
        }
        let old = dir
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > EXPIRY);
        if old {
            let path = dir.path();
            std::fs::remove_dir_all(&path)
                .map_err(io_ctx(format!("removing expired lease {}", path.display())))?;
        }
    }
    Ok(())
}

fn touch(path: &Path) -> io::Result<()> {
    match std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl ImageStore {
    /// Opens (creating) the lease `name` (a hex name chosen by the caller: the same name
    /// reopens the lease an interrupted operation left).
    pub(crate) fn lease_open(&self, name: &str) -> Result<Lease, ImageError> {
        let dir = self.leases.join(name);
        std::fs::create_dir_all(&dir)
            .map_err(io_ctx(format!("creating lease {}", dir.display())))?;
        // A reopened lease counts as fresh.
        let _ = std::fs::File::open(&dir).and_then(|d| {
            d.set_modified(SystemTime::now())?;
            Ok(())
        });
        Ok(Lease { dir })
    }

    /// Adds items to a lease. Done under the store lock, so that an abandoned operation's
    /// cleanup never deletes what another operation has just leased.
    pub(crate) fn lease_add(
        &self,
        lease: &Lease,
        blobs: &[&Digest],
        chains: &[&Digest],
    ) -> Result<(), ImageError> {
        let _g = self.lock();
        let names = blobs
            .iter()
            .map(|d| format!("blob-{}", d.hex()))
            .chain(chains.iter().map(|c| format!("snap-{}", c.hex())));
        for name in names {
            let path = lease.dir.join(name);
            touch(&path).map_err(io_ctx(format!("writing lease {}", path.display())))?;
        }
        Ok(())
    }

    /// Ends a lease whose operation succeeded: what it protected is referenced by records now.
    pub(crate) fn lease_end(&self, lease: &Lease) {
        let _ = std::fs::remove_dir_all(&lease.dir);
    }

    /// Ends a lease whose operation failed for good, deleting what the operation created
    /// unless a record or another lease needs it: the store is left as it was.
    pub(crate) fn lease_abandon(&self, lease: &Lease, created: Created) {
        let _g = self.lock();
        let _ = std::fs::remove_dir_all(&lease.dir);
        let Ok((chains, blobs)) = self.in_use_sets() else {
            return;
        };
        let unused = Created {
            snapshots: created
                .snapshots
                .into_iter()
                .filter(|c| !chains.contains(c))
                .collect(),
            blobs: created
                .blobs
                .into_iter()
                .filter(|b| !blobs.contains(b))
                .collect(),
        };
        self.roll_back(unused);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leased_items_are_listed_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir(&a).unwrap();
        let d = Digest::of(b"x");
        touch(&a.join(format!("blob-{}", d.hex()))).unwrap();
        touch(&a.join(format!("snap-{}", d.hex()))).unwrap();
        touch(&a.join("junk")).unwrap();
        let (chains, blobs) = leased(dir.path());
        assert!(chains.contains(&d) && blobs.contains(&d));
        assert_eq!(chains.len() + blobs.len(), 2);
        expire(dir.path()).unwrap();
        assert!(a.is_dir());
        let cache = dir.path().join(format!("buildcache-{}", d.hex()));
        std::fs::create_dir(&cache).unwrap();
        let old = SystemTime::now() - EXPIRY - Duration::from_secs(60);
        std::fs::File::open(&a).unwrap().set_modified(old).unwrap();
        std::fs::File::open(&cache)
            .unwrap()
            .set_modified(old)
            .unwrap();
        expire(dir.path()).unwrap();
        assert!(!a.exists());
        assert!(cache.is_dir(), "a build cache lease never expires");
    }
}
