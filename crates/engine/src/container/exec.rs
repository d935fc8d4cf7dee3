//! `exec`: a new process in a running container, run by a short-lived `wharf shim exec`.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use wharf_api::models::{ExecConfig, ExecInspectResponse, ProcessConfig};

use super::logs::frame;
use super::shim::{self, ExecSpawn, PtyMaster, ShimError};
use super::spec::{self, ExecInput};
use super::{ContainerError, Status};
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
    pty: Option<Arc<PtyMaster>>,
}

impl ExecInstance {
    fn state(&self) -> std::sync::MutexGuard<'_, ExecState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&self, code: i32) {
        let mut s = self.state();
        s.running = false;
        s.exit_code = Some(i64::from(code));
        s.pty = None;
    }
}

/// How `exec_start` runs: detached, or attached with these options.
pub struct ExecStart {
    pub detach: bool,
    pub tty: bool,
}

/// A started exec's stdio as one duplex byte stream: multiplexed frames out unless it has a
/// tty; what the client writes is the process's stdin.
pub type ExecStream = tokio::io::DuplexStream;

/// One pty master shared by the tasks that read, write and resize it.
struct SharedPty(Arc<PtyMaster>);

impl AsyncRead for SharedPty {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.0.poll_read_shared(cx, buf)
    }
}

impl AsyncWrite for SharedPty {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.poll_write_shared(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

const PIPE_BUFFER: usize = 64 * 1024;

impl Engine {
    pub fn exec_create(
        self: &Arc<Self>,
        key: &str,
        config: ExecConfig,
    ) -> Result<String, ContainerError> {
        let c = self.registry().lookup(key)?;
        let (cid, status) = {
            let r = c.record();
            (r.id.clone(), r.state.status)
        };
        status.guard_signal(&cid)?;
        if status == Status::Paused {
            return Err(ContainerError::Conflict(format!(
                "Container {cid} is paused, unpause the container before exec"
            )));
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
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), instance);
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

    /// Runs an exec instance. `None` when detached; otherwise its stdio as one stream. A
    /// process that cannot be started is reported on the stream, as Docker does, with the
    /// exit code (126/127) left for `exec inspect`.
    pub async fn exec_start(
        self: &Arc<Self>,
        id: &str,
        start: ExecStart,
    ) -> Result<Option<ExecStream>, ContainerError> {
        let e = self.exec_instance(id)?;
        {
            let mut s = e.state();
            if s.started {
                return Err(ContainerError::Conflict(format!(
                    "Error: Exec command {id} has already run"
                )));
            }
            s.started = true;
            s.running = true;
        }
        shim::warm_cgroup_migration();
        match self.exec_launch(&e, &start).await {
            Ok(stream) => Ok(stream),
            Err(ContainerError::Shim(ShimError::Start(message))) => {
                e.finish(super::start::start_failure_code(&message));
                if start.detach {
                    return Err(ContainerError::StartFailed(message));
                }
                let (mut ours, theirs) = tokio::io::duplex(4096);
                let tty = e.config.tty.unwrap_or(false);
                let text = format!("OCI runtime exec failed: {message}\r\n");
                tokio::spawn(async move {
                    let _ = ours.write_all(&frame(2, text.as_bytes(), tty)).await;
                    let _ = ours.shutdown().await;
                });
                Ok(Some(theirs))
            }
            Err(err) => {
                e.finish(126);
                Err(err)
            }
        }
    }

    async fn exec_launch(
        self: &Arc<Self>,
        e: &Arc<ExecInstance>,
        start: &ExecStart,
    ) -> Result<Option<ExecStream>, ContainerError> {
        let c = self.registry().lookup(&e.container_id)?;
        let (cid, status) = {
            let r = c.record();
            (r.id.clone(), r.state.status)
        };
        status.guard_signal(&cid)?;
        let paths = self.container_paths(&cid);
        let raw = tokio::fs::read(paths.dir.join("config.json")).await?;
        let base: oci_spec::runtime::Spec = serde_json::from_slice(&raw).map_err(|err| {
            ContainerError::Invalid(format!(
                "container {cid} has an unreadable runtime spec: {err}"
            ))
        })?;
        let cfg = &e.config;
        let tty = cfg.tty.unwrap_or(false) || start.tty;
        let process = spec::exec_process(&ExecInput {
            base: &base,
            rootfs: &paths.rootfs(),
            args: cfg.cmd.clone().unwrap_or_default(),
            env: cfg.env.clone().unwrap_or_default(),
            cwd: cfg.working_dir.clone().unwrap_or_default(),
            user: cfg.user.clone().unwrap_or_default(),
            tty,
            privileged: cfg.privileged.unwrap_or(false),
        })?;
        let handle = shim::exec(&ExecSpawn {
            id: &cid,
            state_root: &self.cfg.run.join("runtime"),
            dir: &paths.run_dir,
            exec_id: &e.id,
            process: &process,
            tty,
            stdin: cfg.attach_stdin.unwrap_or(false) && !start.detach,
        })
        .await?;
        e.state().pid = handle.pid;
        let exit = handle.exit;
        let instance = e.clone();
        let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
        let (mut from_client, mut to_client) = tokio::io::split(ours);
        match handle.io {
            shim::ExecIo::Pty(master) => {
                let master = Arc::new(master);
                e.state().pty = Some(master.clone());
                let mut input = SharedPty(master.clone());
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_client, &mut input).await;
                });
                let mut output = SharedPty(master);
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut output, &mut to_client).await;
                    instance.finish(exit.await.unwrap_or(255));
                    let _ = to_client.shutdown().await;
                });
            }
            shim::ExecIo::Pipes {
                stdin,
                mut stdout,
                mut stderr,
            } => {
                if let Some(mut stdin) = stdin {
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_client, &mut stdin).await;
                    });
                }
                tokio::spawn(async move {
                    let (mut out_buf, mut err_buf) =
                        (vec![0u8; PIPE_BUFFER], vec![0u8; PIPE_BUFFER]);
                    let (mut out_open, mut err_open) = (true, true);
                    let mut client_open = true;
                    while out_open || err_open {
                        let (stream, n) = tokio::select! {
                            r = stdout.read(&mut out_buf), if out_open => (1u8, r.unwrap_or(0)),
                            r = stderr.read(&mut err_buf), if err_open => (2u8, r.unwrap_or(0)),
                        };
                        if n == 0 {
                            if stream == 1 {
                                out_open = false
                            } else {
                                err_open = false
                            }
                            continue;
                        }
                        let data = if stream == 1 {
                            &out_buf[..n]
                        } else {
                            &err_buf[..n]
                        };
                        // A client that went away stops reading; keep draining so the process
                        // is never blocked on a full pipe.
                        if client_open
                            && to_client
                                .write_all(&frame(stream, data, false))
                                .await
                                .is_err()
                        {
                            client_open = false;
                        }
                    }
                    instance.finish(exit.await.unwrap_or(255));
                    let _ = to_client.shutdown().await;
                });
            }
        }
        if start.detach {
            // Nobody reads a detached exec's output: drain it.
            tokio::spawn(async move {
                let mut theirs = theirs;
                let mut sink = tokio::io::sink();
                let _ = tokio::io::copy(&mut theirs, &mut sink).await;
            });
            return Ok(None);
        }
        Ok(Some(theirs))
    }

    pub async fn exec_resize(&self, id: &str, rows: u16, cols: u16) -> Result<(), ContainerError> {
        let e = self.exec_instance(id)?;
        let pty = e.state().pty.clone();
        match pty {
            Some(pty) => pty.resize(rows, cols).map_err(ContainerError::Io),
            None => Err(ContainerError::Conflict(format!(
                "exec {id} has no running tty"
            ))),
        }
    }

    pub fn exec_inspect(&self, id: &str) -> Result<ExecInspectResponse, ContainerError> {
        let e = self.exec_instance(id)?;
        let s = e.state().clone();
        let cmd = e.config.cmd.clone().unwrap_or_default();
        Ok(ExecInspectResponse {
            can_remove: Some(false),
            id: Some(e.id.clone()),
            running: Some(s.running),
            exit_code: s.exit_code,
            process_config: Some(ProcessConfig {
                privileged: e.config.privileged,
                user: e.config.user.clone(),
                tty: e.config.tty,
                entrypoint: cmd.first().cloned(),
                arguments: Some(cmd.iter().skip(1).cloned().collect()),
            }),
            open_stdin: Some(e.config.attach_stdin.unwrap_or(false)),
            open_stdout: Some(e.config.attach_stdout.unwrap_or(false)),
            open_stderr: Some(e.config.attach_stderr.unwrap_or(false)),
            container_id: Some(e.container_id.clone()),
            pid: Some(i64::from(s.pid)),
            ..Default::default()
        })
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
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, e| e.container_id != container_id);
    }
}
