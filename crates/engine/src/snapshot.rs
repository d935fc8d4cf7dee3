//! Layer snapshots keyed by chain id, and the overlay mounts built from them.
//!
//! `<dir>/<chain-id-hex>/fs` holds one unpacked layer in overlay form, `<dir>/<hex>/size` its
//! size in bytes. A layer is unpacked into `<dir>/tmp-<random>/fs` and the whole directory is
//! renamed once the layer is verified, so a chain id directory is always complete. Removal
//! renames to `tmp-*` first for the same reason; `open` deletes what a crash left in `tmp-*`.
//!
//! Durability is settled after the commit, not before it: a synchronous `syncfs` in the pull
//! path waits for every dirty page on the file system (other writers' included) and cost
//! pulls seconds. A killed process loses nothing the kernel already holds, so a committed
//! snapshot is complete for as long as the kernel that saw it written keeps running; only a
//! kernel crash or power loss can tear it. A commit therefore writes `<hex>/unsynced` with
//! the kernel's boot id and a background thread syncs the file system and removes the
//! markers. `open` removes a snapshot whose marker names another boot; the image store
//! unpacks it again from its blob.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::io::Errno;

use crate::content::{Digest, is_hex64, random_name};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot store {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("overlay mount needs at least one lower directory")]
    NoLowers,
    #[error("mounting overlay on {target}: {new_api}; with mount(2): {classic}")]
    Mount {
        target: PathBuf,
        new_api: Errno,
        classic: String,
    },
    #[error("unmounting {target}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Names the marker of a snapshot committed but not yet synced to disk.
const UNSYNCED: &str = "unsynced";

/// The running kernel's boot id: it changes exactly when unsynced data may have been lost.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub struct Snapshots {
    dir: PathBuf,
    boot_id: String,
    settler: Arc<Settler>,
}

/// Syncs committed snapshots in the background, one pass at a time; commits during a pass
/// ask for another.
#[derive(Default)]
struct Settler {
    state: Mutex<SettleState>,
}

#[derive(Default)]
struct SettleState {
    running: bool,
    again: bool,
}

impl Snapshots {
    /// Opens (creating) the snapshot directory, deletes unfinished `tmp-*` directories and
    /// snapshots a previous boot committed but never synced (they may be torn).
    pub fn open(dir: &Path) -> Result<Snapshots, SnapshotError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        mark_top_dir(dir);
        let boot_id = boot_id();
        let mut unsynced = false;
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let path = entry.path();
            if entry.file_name().as_bytes().starts_with(b"tmp-") {
                std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
                continue;
            }
            match std::fs::read_to_string(path.join(UNSYNCED)) {
                Ok(id) if id.trim() == boot_id => unsynced = true,
                Ok(_) => {
                    tracing::warn!(snapshot = %path.display(), "dropping a snapshot a previous boot never synced");
                    std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
                }
                Err(_) => {}
            }
        }
        let snapshots = Snapshots {
            dir: dir.to_path_buf(),
            boot_id,
            settler: Arc::default(),
        };
        if unsynced {
            snapshots.settle();
        }
        Ok(snapshots)
    }

    /// Starts a background pass that syncs the file system and then removes the markers of
    /// every snapshot committed before it began.
    fn settle(&self) {
        {
            let mut state = self.settler.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.running {
                state.again = true;
                return;
            }
            state.running = true;
        }
        let settler = Arc::clone(&self.settler);
        let dir = self.dir.clone();
        let spawned = std::thread::Builder::new()
            .name("snapshot-sync".into())
            .spawn(move || {
                loop {
                    if let Err(e) = settle_pass(&dir) {
                        tracing::warn!(error = %e, "syncing snapshots (retried at the next commit)");
                    }
                    let mut state = settler.state.lock().unwrap_or_else(|e| e.into_inner());
                    if !state.again {
                        state.running = false;
                        return;
                    }
                    state.again = false;
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "starting the snapshot sync thread");
            let _ = settle_pass(&self.dir);
            let mut state = self.settler.state.lock().unwrap_or_else(|e| e.into_inner());
            state.running = false;
        }
    }

    /// Waits for the background sync to finish (tests, and a daemon shutting down).
    pub fn wait_settled(&self) {
        loop {
            {
                let state = self.settler.state.lock().unwrap_or_else(|e| e.into_inner());
                if !state.running {
                    return;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Whether the snapshot is still waiting for its sync.
    pub fn is_unsynced(&self, chain: &Digest) -> bool {
        self.dir.join(chain.hex()).join(UNSYNCED).exists()
    }

    /// The layer's files: what overlay takes as a lower directory.
    pub fn fs_dir(&self, chain: &Digest) -> PathBuf {
        self.dir.join(chain.hex()).join("fs")
    }

    pub fn exists(&self, chain: &Digest) -> bool {
        self.fs_dir(chain).is_dir()
    }

    /// The unpacked size recorded when the layer was unpacked (0 when unknown).
    pub fn size(&self, chain: &Digest) -> u64 {
        std::fs::read_to_string(self.dir.join(chain.hex()).join("size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Every committed snapshot.
    pub fn list(&self) -> Result<Vec<Digest>, SnapshotError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            if let Some(name) = entry.file_name().to_str()
                && is_hex64(name)
                && let Ok(d) = Digest::parse(&format!("sha256:{name}"))
            {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// A fresh temporary snapshot to unpack into; deleted when dropped uncommitted.
    pub fn prepare(&self) -> Result<TmpSnapshot, SnapshotError> {
        let dir = self.dir.join(format!("tmp-{}", random_name()));
        std::fs::create_dir(&dir).map_err(io_err(&dir))?;
        let tmp = TmpSnapshot { dir };
        let fs = tmp.fs();
        std::fs::create_dir(&fs).map_err(io_err(&fs))?;
        Ok(tmp)
    }

    /// Deletes a snapshot; a missing one is not an error.
    pub fn remove(&self, chain: &Digest) -> Result<(), SnapshotError> {
        let dir = self.dir.join(chain.hex());
        let tmp = self.dir.join(format!("tmp-{}", random_name()));
        match std::fs::rename(&dir, &tmp) {
            Ok(()) => std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&dir)(e)),
        }
    }
}

/// A layer being unpacked, under `tmp-<random>`.
pub struct TmpSnapshot {
    dir: PathBuf,
}

impl TmpSnapshot {
    pub fn fs(&self) -> PathBuf {
        self.dir.join("fs")
    }

    /// Makes the snapshot durable and moves it under its chain id. Returns false (and deletes
    /// this one) when a snapshot with that chain id already exists.
    pub fn commit(
        self,
        snapshots: &Snapshots,
        chain: &Digest,
        size: u64,
    ) -> Result<bool, SnapshotError> {
        let target = snapshots.dir.join(chain.hex());
        if target.join("fs").is_dir() {
            return Ok(false);
        }
        let size_file = self.dir.join("size");
        std::fs::write(&size_file, size.to_string()).map_err(io_err(&size_file))?;
        let marker = self.dir.join(UNSYNCED);
        std::fs::write(&marker, &snapshots.boot_id).map_err(io_err(&marker))?;
        std::fs::rename(&self.dir, &target).map_err(io_err(&target))?;
        snapshots.settle();
        Ok(true)
    }
}

/// Marks `dir` as the top of unrelated trees (`chattr +T`): ext4 then places each new
/// directory in it (each snapshot) in a block group of its own rather than next to its
/// parent. Without a journal, ext4 passes over inodes freed in the last minutes one at a
/// time when it allocates near them, so a layer unpacked where an earlier one was just
/// deleted took seconds per thousand files (a 54k-file pull took 25-40 s instead of 6-9 s).
/// Best effort: other file systems have no such flag.
pub(crate) fn mark_top_dir(dir: &Path) {
    let Ok(d) = std::fs::File::open(dir) else {
        return;
    };
    if let Ok(flags) = rustix::fs::ioctl_getflags(&d)
        && !flags.contains(rustix::fs::IFlags::TOPDIR)
    {
        let _ = rustix::fs::ioctl_setflags(&d, flags | rustix::fs::IFlags::TOPDIR);
    }
}

/// One sync pass: the markers present now belong to snapshots whose files are all written;
/// after one `syncfs` they are on disk and the markers can go. A marker whose removal is lost
/// only costs an unpack after the next reboot.
fn settle_pass(dir: &Path) -> io::Result<()> {
    let mut markers = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let marker = entry?.path().join(UNSYNCED);
        if marker.exists() {
            markers.push(marker);
        }
    }
    if markers.is_empty() {
        return Ok(());
    }
    let d = std::fs::File::open(dir)?;
    rustix::fs::syncfs(&d)?;
    for marker in markers {
        match std::fs::remove_file(&marker) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Drop for TmpSnapshot {
    fn drop(&mut self) {
        // After a commit the directory has moved and this finds nothing.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Mounts an overlay of `lowers` (top layer first) with `upper` and `work` on `target`.
///
/// The new mount API adds each lower with its own `lowerdir+` call, so the number of layers is
/// not limited by mount(2)'s one-page option string; kernels without it (before 6.8) get the
/// classic mount.
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), SnapshotError> {
    mount_overlay_with(lowers, upper, work, target, false)
}

/// [`mount_overlay`], optionally `volatile`: overlayfs then never syncs the upper file system
/// (no syncfs of the whole disk at unmount), for an upper directory that is thrown away after
/// one run (`--rm`) and never trusted after a crash. overlayfs refuses to mount a work
/// directory a volatile mount used again; the marker it leaves is removed first, which is
/// only sound because such a container's layer never outlives a crash (recovery removes it).
pub fn mount_overlay_with(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    volatile: bool,
) -> Result<(), SnapshotError> {
    if lowers.is_empty() {
        return Err(SnapshotError::NoLowers);
    }
    if volatile {
        let marker = work.join("work").join("incompat").join("volatile");
        match std::fs::remove_dir_all(&marker) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&marker)(e)),
        }
    }
    let new_api = match mount_new_api(lowers, upper, work, target, volatile) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    mount_classic(lowers, upper, work, target, volatile).map_err(|classic| SnapshotError::Mount {
        target: target.to_path_buf(),
        new_api,
        classic,
    })
}

fn mount_new_api(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    volatile: bool,
) -> Result<(), Errno> {
    use rustix::mount::{
        FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, fsconfig_create,
        fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
    };
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    fsconfig_set_string(&fs, "source", "overlay")?;
    for lower in lowers {
        fsconfig_set_string(&fs, "lowerdir+", lower.as_path())?;
    }
    fsconfig_set_string(&fs, "upperdir", upper)?;
    fsconfig_set_string(&fs, "workdir", work)?;
    if volatile {
        fsconfig_set_flag(&fs, "volatile")?;
    }
    fsconfig_create(&fs)?;
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    // Both fds are closed here: while the fsmount fd is open, umount of target is EBUSY.
    drop(mnt);
    drop(fs);
    Ok(())
}

/// mount(2) takes overlay's paths in one comma-separated string: escape the separators.
fn escape_option(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        if matches!(b, b':' | b',' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

fn mount_classic(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    volatile: bool,
) -> Result<(), String> {
    let mut data = b"lowerdir=".to_vec();
    for (i, lower) in lowers.iter().enumerate() {
        if i > 0 {
            data.push(b':');
        }
        data.extend(escape_option(lower));
    }
    data.extend(b",upperdir=");
    data.extend(escape_option(upper));
    data.extend(b",workdir=");
    data.extend(escape_option(work));
    if volatile {
        data.extend(b",volatile");
    }
    if data.len() >= 4096 {
        return Err(format!(
            "{} layers make an option string of {} bytes, over the one-page limit",
            lowers.len(),
            data.len()
        ));
    }
    let data = CString::new(data).map_err(|_| "a path contains a NUL byte".to_string())?;
    rustix::mount::mount(
        "overlay",
        target,
        "overlay",
        rustix::mount::MountFlags::empty(),
        data.as_c_str(),
    )
    .map_err(|e| e.to_string())
}

/// Unmounts `target`; a target that is not mounted (or does not exist) is fine.
pub fn unmount(target: &Path) -> Result<(), SnapshotError> {
    match rustix::mount::unmount(target, rustix::mount::UnmountFlags::NOFOLLOW) {
        Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(SnapshotError::Unmount {
            target: target.to_path_buf(),
            source: e.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_mounted(target: &Path) -> bool {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let t = target.to_str().unwrap();
        mounts.lines().any(|l| l.split(' ').nth(4) == Some(t))
    }

    #[test]
    fn many_lowers_mount_and_unmount() {
        let dir = tempfile::tempdir().unwrap();
        let mut lowers = Vec::new();
        // 150 lowers with long names: well over what a one-page option string holds.
        for i in 0..150 {
            let l = dir.path().join(format!("layer-{i:03}-{}", "x".repeat(60)));
            std::fs::create_dir(&l).unwrap();
            std::fs::write(l.join(format!("f{i}")), i.to_string()).unwrap();
            std::fs::write(l.join("top"), i.to_string()).unwrap();
            lowers.push(l);
        }
        lowers.reverse(); // top layer first
        let (upper, work, target) = (
            dir.path().join("upper"),
            dir.path().join("work"),
            dir.path().join("merged"),
        );
        for d in [&upper, &work, &target] {
            std::fs::create_dir(d).unwrap();
        }
        mount_overlay(&lowers, &upper, &work, &target).unwrap();
        let mounted = is_mounted(&target);
        let top = std::fs::read_to_string(target.join("top"));
        let first = std::fs::read_to_string(target.join("f0"));
        std::fs::write(target.join("new"), "n").unwrap();
        unmount(&target).unwrap();
        assert!(mounted);
        assert_eq!(top.unwrap(), "149");
        assert_eq!(first.unwrap(), "0");
        assert!(upper.join("new").is_file());
        assert!(!is_mounted(&target));
        // Idempotent: a second unmount and one of a missing path are fine.
        unmount(&target).unwrap();
        unmount(&dir.path().join("missing")).unwrap();
    }

    /// A lower directory named `lower_name` holding `a`, and empty upper, work and target.
    fn overlay_dirs(base: &Path, lower_name: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
        let dirs = (
            base.join(lower_name),
            base.join("upper"),
            base.join("work"),
            base.join("merged"),
        );
        for d in [&dirs.0, &dirs.1, &dirs.2, &dirs.3] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(dirs.0.join("a"), "a").unwrap();
        dirs
    }

    #[test]
    fn volatile_mounts_skip_syncs_and_mount_again() {
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper, work, target) = overlay_dirs(dir.path(), "lower");
        let lowers = std::slice::from_ref(&lower);
        mount_overlay_with(lowers, &upper, &work, &target, true).unwrap();
        let options = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(target.to_str().unwrap()))
            .map(str::to_string);
        std::fs::write(target.join("b"), "b").unwrap();
        unmount(&target).unwrap();
        // overlayfs leaves a marker that makes a second mount of this work directory fail;
        // the next volatile mount clears it.
        assert!(work.join("work/incompat/volatile").is_dir());
        mount_overlay_with(lowers, &upper, &work, &target, true).unwrap();
        let b = std::fs::read_to_string(target.join("b"));
        unmount(&target).unwrap();
        assert!(options.unwrap().contains("volatile"));
        assert_eq!(b.unwrap(), "b");
    }

    #[test]
    fn classic_mount_works_and_reports_long_options() {
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper, work, target) = overlay_dirs(dir.path(), "lo:wer");
        mount_classic(std::slice::from_ref(&lower), &upper, &work, &target, false).unwrap();
        let read = std::fs::read_to_string(target.join("a"));
        unmount(&target).unwrap();
        assert_eq!(read.unwrap(), "a");
        let many = vec![lower.join("x".repeat(200)); 30];
        let err = mount_classic(&many, &upper, &work, &target, false).unwrap_err();
        assert!(err.contains("one-page limit"), "{err}");
        assert!(matches!(
            mount_overlay(&[], &upper, &work, &target),
            Err(SnapshotError::NoLowers)
        ));
    }

    #[test]
    fn tmp_snapshots_commit_or_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = Snapshots::open(dir.path()).unwrap();
        let chain = Digest::of(b"layer");
        let tmp = snaps.prepare().unwrap();
        std::fs::write(tmp.fs().join("f"), "x").unwrap();
        assert!(tmp.commit(&snaps, &chain, 1).unwrap());
        assert!(snaps.exists(&chain));
        assert_eq!(snaps.size(&chain), 1);
        let again = snaps.prepare().unwrap();
        assert!(!again.commit(&snaps, &chain, 1).unwrap());
        drop(snaps.prepare().unwrap());
        // A leftover tmp dir from a crash is removed at open.
        std::fs::create_dir(dir.path().join("tmp-leftover")).unwrap();
        let snaps = Snapshots::open(dir.path()).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(chain.hex())]);
        assert_eq!(snaps.list().unwrap(), vec![chain.clone()]);
        snaps.remove(&chain).unwrap();
        snaps.remove(&chain).unwrap();
        assert!(!snaps.exists(&chain));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
