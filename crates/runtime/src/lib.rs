//! The OCI runtime: a synchronous layer over youki's `libcontainer` and `libcgroups`, with a
//! direct create path of its own for the specs wharf writes on cgroup v1 (see `direct`).
//!
//! Creating, starting and exec'ing containers clone3()s the calling process, so those calls
//! belong in a single-threaded process (the shim). The cgroup reads in [`cgroup`] never fork
//! and are safe to call from the daemon.

#[allow(unsafe_code)]
mod sys;

pub mod cgroup;
mod container;
mod direct;
mod executor;
pub mod seccomp;
pub mod socket;

pub use container::{Container, ExecOptions, InitOptions, RuntimeError, Stdio, exec};
pub use direct::creates_directly;
pub use sys::{
    Fork, fork, recv_with_fd, release_clean_file_pages, send_with_fd, set_sigpipe_default,
    set_winsize, thread_count, trim_heap,
};
