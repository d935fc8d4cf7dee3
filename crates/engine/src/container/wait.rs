//! `wait`: block until the container reaches a condition; returns its exit code.

use std::sync::Arc;

use super::ContainerError;
use crate::Engine;

/// Docker's wait conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitCondition {
    #[default]
    NotRunning,
    NextExit,
    Removed,
}

impl std::str::FromStr for WaitCondition {
    type Err = ContainerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "not-running" => Ok(WaitCondition::NotRunning),
            "next-exit" => Ok(WaitCondition::NextExit),
            "removed" => Ok(WaitCondition::Removed),
            other => Err(ContainerError::Invalid(format!(
                "invalid condition: \"{other}\""
            ))),
        }
    }
}

impl Engine {
    /// Resolves the container now (so a missing one fails at once), then returns a future that
    /// waits for the condition and yields the exit code.
    pub fn wait(
        self: &Arc<Self>,
        key: &str,
        condition: WaitCondition,
    ) -> Result<impl Future<Output = i64> + Send + 'static, ContainerError> {
        let c = self.registry().lookup(key)?;
        let mut rx = c.lifecycle.subscribe();
        let start = *rx.borrow_and_update();
        let (running, exit_code) = {
            let r = c.record();
            (
                r.state.status.is_running() || r.state.status == super::Status::Restarting,
                r.state.exit_code,
            )
        };
        Ok(async move {
            if condition == WaitCondition::NotRunning && !running {
                return i64::from(exit_code);
            }
            loop {
                let now = *rx.borrow_and_update();
                let done = match condition {
                    WaitCondition::NotRunning | WaitCondition::NextExit => now.exits > start.exits,
                    WaitCondition::Removed => now.removed,
                };
                if done {
                    return i64::from(now.last_exit_code);
                }
                if rx.changed().await.is_err() {
                    // The container is gone; its last exit is the answer.
                    return i64::from(rx.borrow().last_exit_code);
                }
            }
        })
    }
}
