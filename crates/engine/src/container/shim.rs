//! STUB (lead worktree only).
use std::path::Path;
use tokio::net::UnixStream;
use super::AttachStreams;
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("x")]
    X,
}
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExitRecord {
    pub exit_code: i32,
    pub oom_killed: bool,
    pub finished_at: String,
}
pub struct ShimSpawn<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub state_root: &'a Path,
    pub dir: &'a Path,
    pub log: &'a Path,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
}
pub struct ExecIo;
pub async fn spawn(_s: &ShimSpawn<'_>) -> Result<u32, ShimError> {
    Err(ShimError::X)
}
pub async fn release(_dir: &Path) -> Result<(), ShimError> {
    Ok(())
}
pub async fn attach(_dir: &Path, _s: AttachStreams) -> Result<UnixStream, ShimError> {
    Err(ShimError::X)
}
pub async fn resize(_dir: &Path, _r: u16, _c: u16) -> Result<(), ShimError> {
    Ok(())
}
pub async fn wait(_dir: &Path) -> Result<ExitRecord, ShimError> {
    Err(ShimError::X)
}
pub fn read_exit(_dir: &Path) -> Option<ExitRecord> {
    None
}
pub async fn is_alive(_dir: &Path) -> bool {
    false
}
