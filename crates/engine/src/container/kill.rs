//! `kill`: send a signal to the container's init process.

use std::sync::Arc;

use nix::sys::signal::Signal;

use super::{Container, ContainerError, Status};
use crate::Engine;
use crate::meta::Table;

/// Parses a signal as Docker accepts it: "SIGTERM", "TERM", "15", any case.
pub fn parse_signal(s: &str) -> Result<Signal, ContainerError> {
    let bad = || ContainerError::Invalid(format!("invalid signal: {s}"));
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| bad())
}

impl Engine {
    pub async fn kill(
        self: &Arc<Self>,
        key: &str,
        signal: Option<&str>,
    ) -> Result<(), ContainerError> {
        let signal = parse_signal(signal.filter(|s| !s.is_empty()).unwrap_or("SIGKILL"))?;
        let c = self.registry().lookup(key)?;
        let _op = c.op.lock().await;
        self.signal(&c, signal, true)
    }

    /// Sends `signal` to the container's init. `manual` marks the container as stopped by the
    /// user so its restart policy leaves it alone.
    pub(super) fn signal(
        &self,
        c: &Arc<Container>,
        signal: Signal,
        manual: bool,
    ) -> Result<(), ContainerError> {
        let (pid, status, id) = {
            let r = c.record();
            (r.state.pid, r.state.status, r.id.clone())
        };
        if status == Status::Restarting && manual {
            let record = {
                let mut r = c.record();
                r.manually_stopped = true;
                r.state.status = Status::Exited;
                r.clone()
            };
            self.meta.put(Table::Containers, &id, &record)?;
            return Ok(());
        }
        status.guard_signal(&id)?;
        if manual
            && matches!(
                signal,
                Signal::SIGKILL | Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT
            )
        {
            let record = {
                let mut r = c.record();
                r.manually_stopped = true;
                r.clone()
            };
            self.meta.put(Table::Containers, &id, &record)?;
        }
        let pid = i32::try_from(pid)
            .map_err(|_| ContainerError::Conflict(format!("container {id} has no pid")))?;
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(ContainerError::Io(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_docker() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("term").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("SIGNOPE").is_err());
    }
}
