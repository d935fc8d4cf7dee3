//! `stop`: the stop signal, a grace period, then SIGKILL.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::kill::parse_signal;
use super::{Container, ContainerError, Status};
use crate::Engine;

const DEFAULT_STOP_TIMEOUT: i64 = 10;

impl Engine {
    pub async fn stop(
        self: &Arc<Self>,
        key: &str,
        timeout: Option<i64>,
        signal: Option<&str>,
    ) -> Result<(), ContainerError> {
        let c = self.registry().lookup(key)?;
        let _op = c.op.lock().await;
        let status = c.record().state.status;
        if status == Status::Restarting {
            return self.signal(&c, Signal::SIGKILL, true);
        }
        if !status.is_running() {
            return Err(ContainerError::NotModified("stopped"));
        }
        self.stop_locked(&c, timeout, signal).await
    }

    /// Stops a running container and waits for its exit; the caller holds the op lock.
    pub(super) async fn stop_locked(
        self: &Arc<Self>,
        c: &Arc<Container>,
        timeout: Option<i64>,
        signal: Option<&str>,
    ) -> Result<(), ContainerError> {
        let (stop_signal, default_timeout, paused) = {
            let r = c.record();
            (
                r.config.stop_signal.clone().filter(|s| !s.is_empty()),
                r.config.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT),
                r.state.status == Status::Paused,
            )
        };
        let signal = parse_signal(signal.or(stop_signal.as_deref()).unwrap_or("SIGTERM"))?;
        let timeout = timeout.unwrap_or(default_timeout);
        let mut exits = c.lifecycle.subscribe();
        exits.borrow_and_update();
        self.signal(c, signal, true)?;
        if paused {
            self.thaw(c)?;
        }
        let grace = if timeout < 0 {
            None
        } else {
            Some(Duration::from_secs(timeout.unsigned_abs()))
        };
        let exited = match grace {
            Some(grace) => tokio::time::timeout(grace, exits.changed()).await.is_ok(),
            None => exits.changed().await.is_ok(),
        };
        if !exited && c.record().state.status.is_running() {
            self.signal(c, Signal::SIGKILL, true)?;
            let _ = exits.changed().await;
        }
        Ok(())
    }
}
