//! Unix socket paths longer than `sun_path` allows (108 bytes): containers live under long
//! roots (`<run>/containers/<64 hex>/shim.sock` under a test's temporary directory). The
//! directory is opened with O_PATH and the socket is named through `/proc/self/fd/N/`, which
//! any process may do without changing its working directory.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The longest path wharf hands to bind(2)/connect(2) as is.
const SUN_PATH_MAX: usize = 100;

/// A path to the same socket that fits `sun_path`; keep it alive while the path is used.
pub struct SocketPath {
    _dir: Option<OwnedFd>,
    path: PathBuf,
}

impl SocketPath {
    pub fn new(path: &Path) -> std::io::Result<SocketPath> {
        if path.as_os_str().len() <= SUN_PATH_MAX {
            return Ok(SocketPath {
                _dir: None,
                path: path.to_path_buf(),
            });
        }
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(SocketPath {
                _dir: None,
                path: path.to_path_buf(),
            });
        };
        let dir: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)?
            .into();
        let path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
        Ok(SocketPath {
            _dir: Some(dir),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_bind_and_connect() {
        let base = std::env::temp_dir().join(format!("wharf-sock-{}", std::process::id()));
        let deep = base.join("x".repeat(60)).join("y".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let sock = deep.join("shim.sock");
        assert!(sock.as_os_str().len() > 108);
        let p = SocketPath::new(&sock).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(p.path()).unwrap();
        assert!(sock.exists());
        let q = SocketPath::new(&sock).unwrap();
        let _client = std::os::unix::net::UnixStream::connect(q.path()).unwrap();
        assert!(listener.accept().is_ok());
        std::fs::remove_dir_all(&base).unwrap();
        let short = SocketPath::new(Path::new("/run/x.sock")).unwrap();
        assert_eq!(short.path(), Path::new("/run/x.sock"));
    }
}
