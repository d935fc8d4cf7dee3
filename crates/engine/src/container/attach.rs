//! `attach`: a stream to the container's stdio through its shim. A client may attach before
//! `start` (the docker CLI's `run` does); such attaches wait here and are connected by `start`
//! before the process is let run, so no early output is lost.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::net::UnixStream;
use tokio::sync::oneshot;

use super::shim::{self, AttachStreams};
use super::{Container, ContainerError, ContainerPaths, Status};
use crate::Engine;

pub(super) struct PendingAttach {
    streams: AttachStreams,
    reply: oneshot::Sender<Result<UnixStream, ContainerError>>,
}

/// Attaches waiting for the container to start.
#[derive(Default)]
pub(super) struct PendingAttaches(Mutex<Vec<PendingAttach>>);

impl PendingAttaches {
    fn take(&self) -> Vec<PendingAttach> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn push(&self, p: PendingAttach) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(p);
    }
}

impl Container {
    pub(super) fn fail_pending_attaches(&self, err: &ContainerError) {
        for p in self.pending.take() {
            let _ = p
                .reply
                .send(Err(ContainerError::StartFailed(err.to_string())));
        }
    }
}

/// A connection to the container's stdio, pending until the shim accepts it.
pub type AttachFuture = Pin<Box<dyn Future<Output = Result<UnixStream, ContainerError>> + Send>>;

impl Engine {
    /// Attaches to a container's stdio. Returns at once whether the container has a tty (raw
    /// stream) and the connection to await; for a created container the connection is made
    /// when it starts, before its process runs.
    pub fn attach(
        self: &Arc<Self>,
        key: &str,
        streams: AttachStreams,
    ) -> Result<(bool, AttachFuture), ContainerError> {
        let c = self.registry().lookup(key)?;
        let (status, tty, id) = {
            let r = c.record();
            (r.state.status, r.tty(), r.id.clone())
        };
        let run_dir = self.container_paths(&id).run_dir;
        let connect: AttachFuture = match status {
            Status::Running | Status::Paused => Box::pin(async move {
                shim::attach(&run_dir, streams)
                    .await
                    .map_err(ContainerError::from)
            }),
            Status::Created | Status::Exited | Status::Restarting => {
                let (reply, rx) = oneshot::channel();
                c.pending.push(PendingAttach { streams, reply });
                Box::pin(async move {
                    rx.await.map_err(|_| {
                        ContainerError::Conflict(format!("container {id} was removed"))
                    })?
                })
            }
            Status::Removing | Status::Dead => {
                return Err(ContainerError::Conflict(format!(
                    "container {id} is being removed"
                )));
            }
        };
        Ok((tty, connect))
    }

    /// Connects the attaches that waited for `start`; called before the process is let run.
    pub(super) async fn connect_pending_attaches(
        &self,
        c: &Arc<Container>,
        paths: &ContainerPaths,
    ) {
        for p in c.pending.take() {
            let result = shim::attach(&paths.run_dir, p.streams)
                .await
                .map_err(ContainerError::from);
            let _ = p.reply.send(result);
        }
    }

    /// Resizes the container's tty.
    pub async fn resize(&self, key: &str, rows: u16, cols: u16) -> Result<(), ContainerError> {
        let c = self.registry().lookup(key)?;
        let (status, id) = {
            let r = c.record();
            (r.state.status, r.id.clone())
        };
        status.guard_signal(&id)?;
        shim::resize(&self.container_paths(&id).run_dir, rows, cols).await?;
        Ok(())
    }
}
