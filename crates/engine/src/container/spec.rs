//! STUB (lead worktree only).
use std::path::{Path, PathBuf};
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("x")]
    X,
}
pub struct SpecInput<'a> {
    pub id: &'a str,
    pub rootfs: &'a Path,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub hostname: String,
    pub tty: bool,
    pub open_stdin: bool,
    pub host: &'a wharf_api::models::HostConfig,
    pub etc_files: &'a [(String, PathBuf)],
    pub cgroup_parent: &'a str,
    pub init_binary: Option<&'a Path>,
}
pub fn build(_i: &SpecInput<'_>) -> Result<(oci_spec::runtime::Spec, Vec<String>), SpecError> {
    Err(SpecError::X)
}
pub fn validate_capability(name: &str) -> Result<String, SpecError> {
    Ok(name.to_string())
}
