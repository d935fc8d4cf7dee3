//! STUB (lead worktree only).
use std::path::{Path, PathBuf};
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("x")]
    X,
}
pub fn mount_overlay(_l: &[PathBuf], _u: &Path, _w: &Path, _t: &Path) -> Result<(), SnapshotError> {
    Ok(())
}
pub fn unmount(_t: &Path) -> Result<(), SnapshotError> {
    Ok(())
}
