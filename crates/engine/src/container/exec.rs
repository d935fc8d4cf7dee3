//! `exec`: a new process in a running container, run by a short-lived `wharf shim exec`.

use std::sync::{Arc, Mutex};

use wharf_api::models::{ExecConfig, ExecInspectResponse};

use super::{ContainerError, shim};
use crate::Engine;
use crate::util::random_id;

/// An exec instance: created by `exec_create`, run once by `exec_start`.
pub struct ExecInstance {
    pub id: String,
    pub container_id: String,
    pub config: ExecConfig,
    state: Mutex<ExecState>,
}

#[derive(Default, Clone)]
struct ExecState {
    started: bool,
    running: bool,
    exit_code: Option<i64>,
    pid: u32,
}

/// How `exec_start` runs: detached, or attached with these options.
pub struct ExecStart {
    pub detach: bool,
    pub tty: bool,
}

/// The stdio of a started exec.
pub type ExecIo = shim::ExecIo;

/// A started exec's stdio as one duplex byte stream.
pub type ExecStream = tokio::io::DuplexStream;

impl Engine {
    pub fn exec_create(self: &Arc<Self>, key: &str, config: ExecConfig) -> Result<String, ContainerError> {
        let c = self.registry().lookup(key)?;
        let (cid, status) = {
            let r = c.record();
            (r.id.clone(), r.state.status)
        };
        status.guard_signal(&cid)?;
        if status == super::Status::Paused {
            return Err(ContainerError::Conflict(format!("Container {cid} is paused, unpause the container before exec")));
        }
        if config.cmd.as_ref().is_none_or(|c| c.is_empty()) {
            return Err(ContainerError::Invalid("No exec command specified".into()));
        }
        let id = random_id();
        let instance = Arc::new(ExecInstance {
            id: id.clone(),
            container_id: cid,
            config,
            state: Mutex::new(ExecState::default()),
        });
        self.execs.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), instance);
        Ok(id)
    }

    fn exec_instance(&self, id: &str) -> Result<Arc<ExecInstance>, ContainerError> {
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| ContainerError::ExecNotFound(id.to_string()))
    }

    pub fn exec_inspect(&self, id: &str) -> Result<ExecInspectResponse, ContainerError> {
        let e = self.exec_instance(id)?;
        let s = e.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(ExecInspectResponse {
            can_remove: Some(false),
            id: Some(e.id.clone()),
            running: Some(s.running),
            exit_code: s.exit_code,
            open_stdin: Some(e.config.attach_stdin.unwrap_or(false)),
            open_stdout: Some(e.config.attach_stdout.unwrap_or(false)),
            open_stderr: Some(e.config.attach_stderr.unwrap_or(false)),
            container_id: Some(e.container_id.clone()),
            pid: Some(i64::from(s.pid)),
            ..Default::default()
        })
    }

    /// Runs an exec instance. `None` when detached; otherwise the stream of its stdio
    /// (multiplexed frames unless it has a tty).
    pub async fn exec_start(self: &Arc<Self>, id: &str, start: ExecStart) -> Result<Option<ExecStream>, ContainerError> {
        let e = self.exec_instance(id)?;
        let _ = start;
        Err(ContainerError::Conflict(format!("exec {} is not supported yet", e.id)))
    }

    pub async fn exec_resize(&self, id: &str, rows: u16, cols: u16) -> Result<(), ContainerError> {
        let _ = (self.exec_instance(id)?, rows, cols);
        Ok(())
    }

    pub(crate) fn exec_ids(&self, container_id: &str) -> Vec<String> {
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|e| e.container_id == container_id)
            .map(|e| e.id.clone())
            .collect()
    }

    pub(super) fn forget_execs(&self, container_id: &str) {
        self.execs.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, e| e.container_id != container_id);
    }
}
