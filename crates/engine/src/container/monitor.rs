//! Watching running containers: an exit is recorded, then the restart policy or `--rm` acts.
//! On daemon start, `recover` reloads every record and reattaches to the shims still running.

use std::sync::Arc;
use std::time::Duration;

use wharf_api::models::RestartPolicyNameEnum;

use super::shim::{self, ExitRecord};
use super::{Container, ContainerRecord, Registry, Status};
use crate::meta::Table;
use crate::util::{now_rfc3339, unix_seconds};
use crate::{Engine, EngineError, snapshot};

/// Docker's restart back-off: starts at 100 ms, doubles, caps at a minute, and resets once
/// the container has run for 10 s.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const BACKOFF_RESET_AFTER: i64 = 10;

impl Engine {
    pub(super) fn spawn_monitor(self: &Arc<Self>, c: Arc<Container>) {
        let engine = self.clone();
        tokio::spawn(async move {
            let run_dir = engine.container_paths(&c.id()).run_dir;
            let exit = shim::wait(&run_dir).await;
            engine.on_exit(&c, exit.ok()).await;
        });
    }

    /// Records an exit (`None`: the shim vanished without a record), then applies policy.
    async fn on_exit(self: &Arc<Self>, c: &Arc<Container>, exit: Option<ExitRecord>) {
        let id = c.id();
        let paths = self.container_paths(&id);
        if let Err(e) = snapshot::unmount(&paths.rootfs()) {
            tracing::warn!(container = %id, error = %e, "unmounting rootfs");
        }
        let mut net = c.record().network.clone();
        self.networks.release(&id, &mut net).await;
        c.record().network = net;
        let (code, oom, finished) = match exit {
            Some(r) => (r.exit_code, r.oom_killed, r.finished_at),
            None => (255, false, now_rfc3339()),
        };
        let (record, restart) = {
            let mut r = c.record();
            let ran_for = unix_seconds(&finished) - unix_seconds(&r.state.started_at);
            r.state.status = Status::Exited;
            r.state.pid = 0;
            r.state.exit_code = code;
            r.state.oom_killed = oom;
            r.state.finished_at = finished;
            let restart = should_restart(&r, code);
            if restart {
                r.state.status = Status::Restarting;
            }
            let mut backoff = c.backoff.lock().unwrap_or_else(|e| e.into_inner());
            *backoff = if ran_for >= BACKOFF_RESET_AFTER || backoff.is_zero() {
                BACKOFF_START
            } else {
                (*backoff * 2).min(BACKOFF_MAX)
            };
            (r.clone(), restart.then_some(*backoff))
        };
        // A restarted daemon settles a lost exit again from the shim's exit record.
        if let Err(e) = self.meta.put_soon(Table::Containers, &id, &record) {
            tracing::error!(container = %id, error = %e, "recording exit");
        }
        c.lifecycle.send_modify(|l| {
            l.exits += 1;
            l.last_exit_code = code;
        });
        if let Some(delay) = restart {
            self.schedule_restart(c.clone(), delay);
        } else if record.host_config.auto_remove.unwrap_or(false) {
            let engine = self.clone();
            tokio::spawn(async move {
                if let Err(e) = engine.remove(&id, true, false).await {
                    tracing::warn!(container = %id, error = %e, "auto-removing");
                }
            });
        }
    }

    fn schedule_restart(self: &Arc<Self>, c: Arc<Container>, delay: Duration) {
        let engine = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _op = c.op.lock().await;
            {
                let mut r = c.record();
                if r.state.status != Status::Restarting || r.manually_stopped {
                    return;
                }
                r.restart_count += 1;
            }
            if let Err(e) = engine.start_locked(&c).await {
                tracing::warn!(container = %c.id(), error = %e, "restarting by policy");
                let code = c.record().state.exit_code;
                drop(_op);
                let restart = {
                    let mut r = c.record();
                    let again = should_restart(&r, code);
                    r.state.status = if again {
                        Status::Restarting
                    } else {
                        Status::Exited
                    };
                    again
                };
                if restart {
                    let next = {
                        let mut b = c.backoff.lock().unwrap_or_else(|e| e.into_inner());
                        *b = (*b * 2).min(BACKOFF_MAX);
                        *b
                    };
                    engine.schedule_restart(c, next);
                }
            }
        });
    }

    /// Reloads the records and reconnects to live shims; settles the ones that died meanwhile.
    pub(crate) async fn recover(self: &Arc<Self>) -> Result<(), EngineError> {
        let records: Vec<(String, ContainerRecord)> = self.meta.list(Table::Containers)?;
        let recorded = records.iter().map(|(_, r)| r.id.clone()).collect();
        super::sweep(&self.cfg.root.join("containers"), Some(&recorded));
        // State changes are made durable a moment after they happen (meta::FLUSH_AFTER): a
        // crash may have lost the last ones. The files tell what happened.
        let mut kept = Vec::with_capacity(records.len());
        for (_, mut record) in records {
            let paths = self.container_paths(&record.id);
            if !paths.dir.exists() {
                // Removed; the deletion of its record did not reach the disk.
                self.meta.delete(Table::Containers, &record.id)?;
                continue;
            }
            if matches!(record.state.status, Status::Created | Status::Exited) {
                // Started (and maybe exited too) with the running state lost: a live shim, or
                // an exit record the record has not settled. The Running case below settles it.
                let unsettled = shim::read_exit(&paths.run_dir)
                    .is_some_and(|e| e.finished_at != record.state.finished_at);
                if unsettled || shim::is_alive(&paths.run_dir).await {
                    adopt_running(&mut record, &paths.run_dir);
                }
            }
            kept.push(record);
        }
        let mut live = Vec::new();
        {
            let mut registry: std::sync::MutexGuard<'_, Registry> = self.registry();
            for record in kept {
                let status = record.state.status;
                let c = Container::new(record);
                registry.insert(c.clone());
                live.push((c, status));
            }
        }
        for (c, status) in live {
            let id = c.id();
            let run_dir = self.container_paths(&id).run_dir;
            match status {
                Status::Running | Status::Paused => {
                    if shim::is_alive(&run_dir).await {
                        self.networks.restore(&id, &c.record().network);
                        self.spawn_monitor(c);
                    } else {
                        let exit = shim::read_exit(&run_dir);
                        self.on_exit(&c, exit).await;
                    }
                }
                Status::Restarting => {
                    c.record().state.status = Status::Restarting;
                    self.schedule_restart(c, BACKOFF_START);
                }
                Status::Removing => {
                    c.record().state.status = Status::Dead;
                    let _ = self.remove(&id, true, false).await;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Marks `record` running under the shim serving `run_dir`: its pid from the pid file, the
/// start time from when the shim wrote it.
fn adopt_running(record: &mut ContainerRecord, run_dir: &std::path::Path) {
    let pid_file = run_dir.join("pid");
    record.state.status = Status::Running;
    record.state.pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    record.state.exit_code = 0;
    record.state.error.clear();
    record.state.started_at = std::fs::metadata(&pid_file)
        .and_then(|m| m.modified())
        .map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
        })
        .unwrap_or_else(|_| now_rfc3339());
    record.state.finished_at = crate::util::ZERO_TIME.into();
}

/// Whether the restart policy restarts a container that exited with `code`.
fn should_restart(r: &ContainerRecord, code: i32) -> bool {
    if r.manually_stopped {
        return false;
    }
    let policy = r.host_config.restart_policy.clone().unwrap_or_default();
    match policy.name.unwrap_or(RestartPolicyNameEnum::NO) {
        RestartPolicyNameEnum::ALWAYS | RestartPolicyNameEnum::UNLESS_STOPPED => true,
        RestartPolicyNameEnum::ON_FAILURE => {
            let max = policy.maximum_retry_count.unwrap_or(0);
            code != 0 && (max == 0 || r.restart_count < max)
        }
        RestartPolicyNameEnum::NO | RestartPolicyNameEnum::EMPTY => false,
    }
}
