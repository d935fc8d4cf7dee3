//! The workload executor: youki's default one, with runc's wording for the errors the docker
//! CLI turns into exit codes 127 ("executable file not found in $PATH",
//! "no such file or directory") and 126 ("permission denied").

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

use crate::seccomp::Program;

#[derive(Clone, Default)]
pub(crate) struct WharfExecutor {
    /// A precompiled seccomp program (read before the clone: the host's files are out of reach
    /// once the init has pivoted into the rootfs), loaded at the end of `validate`.
    pub seccomp: Option<Arc<Program>>,
}

impl Executor for WharfExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        self.check(spec)?;
        // Last: capabilities are final, and what runs from here to the workload is the init's
        // hand-off (notify socket, execve), which every profile allows.
        if let Some(p) = &self.seccomp {
            crate::seccomp::install(p).map_err(|e| {
                ExecutorValidationError::ArgValidationError(format!("loading seccomp: {e}"))
            })?;
        }
        Ok(())
    }
}

impl WharfExecutor {
    fn check(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        let process = spec.process().as_ref().ok_or_else(|| {
            ExecutorValidationError::ArgValidationError("the spec has no process".into())
        })?;
        let Some(arg0) = process.args().as_ref().and_then(|a| a.first()) else {
            return Err(ExecutorValidationError::ArgValidationError(
                "no command specified".into(),
            ));
        };
        let path_var = process
            .env()
            .as_ref()
            .and_then(|env| env.iter().find_map(|e| e.strip_prefix("PATH=")))
            .unwrap_or("");
        check_executable(arg0, path_var)
            .map(|_| ())
            .map_err(ExecutorValidationError::ArgValidationError)
    }
}

/// Resolves `name` as execvp would, in the current root; the error is the message runc gives.
pub(crate) fn check_executable(name: &str, path_var: &str) -> Result<PathBuf, String> {
    let candidate = if name.contains('/') {
        let p = PathBuf::from(name);
        if let Err(e) = std::fs::metadata(&p) {
            return Err(format!("exec: \"{name}\": stat {name}: {}", io_words(&e)));
        }
        p
    } else {
        path_var
            .split(':')
            .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(name))
            .find(|p| p.is_file() && is_executable(p))
            .or_else(|| {
                path_var
                    .split(':')
                    .map(|dir| Path::new(dir).join(name))
                    .find(|p| p.is_file())
            })
            .ok_or_else(|| format!("exec: \"{name}\": executable file not found in $PATH"))?
    };
    if candidate.is_dir() || !is_executable(&candidate) {
        return Err(format!("exec: \"{name}\": permission denied"));
    }
    Ok(candidate)
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// An io error in Go's words ("no such file or directory"), without Rust's "(os error N)".
fn io_words(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_lowercase(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_runc() {
        let e = check_executable("surely-not-a-command", "/usr/bin:/bin").unwrap_err();
        assert_eq!(
            e,
            "exec: \"surely-not-a-command\": executable file not found in $PATH"
        );
        let e = check_executable("/nope/x", "/bin").unwrap_err();
        assert!(e.contains("no such file or directory"), "{e}");
        let e = check_executable("/etc/passwd", "/bin").unwrap_err();
        assert!(e.ends_with("permission denied"), "{e}");
        let e = check_executable("/", "/bin").unwrap_err();
        assert!(e.ends_with("permission denied"), "{e}");
        assert_eq!(
            check_executable("sh", "/nonexistent:/bin").unwrap(),
            PathBuf::from("/bin/sh")
        );
    }
}
