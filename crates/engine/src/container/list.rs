//! `ps`: the container list with Docker's filters, newest first.

use std::collections::HashMap;
use std::sync::Arc;

use wharf_api::models::{self, ContainerSummary, ContainerSummaryStateEnum};

use super::{ContainerError, ContainerRecord, Status};
use crate::Engine;
use crate::util::{human_duration, unix_seconds};

pub use wharf_api::Filters;

impl Engine {
    pub fn list(
        self: &Arc<Self>,
        all: bool,
        limit: Option<usize>,
        filters: &Filters,
    ) -> Result<Vec<ContainerSummary>, ContainerError> {
        for key in filters.keys() {
            if !matches!(
                key.as_str(),
                "status"
                    | "name"
                    | "label"
                    | "id"
                    | "ancestor"
                    | "exited"
                    | "before"
                    | "since"
                    | "network"
            ) {
                return Err(ContainerError::Invalid(format!("invalid filter '{key}'")));
            }
        }
        let mut records: Vec<ContainerRecord> =
            self.registry().all().iter().map(|c| c.snapshot()).collect();
        records.sort_by(|a, b| b.created.cmp(&a.created));
        let ancestors = self.ancestor_ids(filters);
        let all = all
            || limit.is_some()
            || filters.contains_key("status")
            || filters.contains_key("exited");
        let now = chrono::Utc::now().timestamp();
        let mut out = Vec::new();
        for r in records {
            if !all && !r.state.status.is_running() && r.state.status != Status::Restarting {
                continue;
            }
            if !matches_filters(&r, filters, &ancestors) {
                continue;
            }
            let mut s = summary(&r, now);
            let (networks, _, _) = self.network_settings(&r);
            s.network_settings = Some(models::ContainerSummaryNetworkSettings {
                networks: Some(networks),
            });
            if r.state.status.is_running() {
                let exposed = r.config.exposed_ports.clone().unwrap_or_default();
                s.ports = Some(crate::network::ports::summaries(&exposed, &r.network.ports));
            }
            out.push(s);
            if limit.is_some_and(|n| out.len() >= n) {
                break;
            }
        }
        Ok(out)
    }

    fn ancestor_ids(&self, filters: &Filters) -> Vec<String> {
        filters
            .get("ancestor")
            .into_iter()
            .flatten()
            .filter_map(|name| self.images.resolve(name).ok().map(|i| i.id))
            .collect()
    }
}

fn matches_filters(r: &ContainerRecord, filters: &Filters, ancestors: &[String]) -> bool {
    filters.iter().all(|(key, values)| {
        values.is_empty()
            || values.iter().any(|v| match key.as_str() {
                "status" => r.state.status.as_str() == v,
                "name" => r.name.contains(v.trim_start_matches('/')),
                "id" => r.id.starts_with(v.as_str()),
                "exited" => {
                    r.state.status == Status::Exited
                        && v.parse::<i32>().ok() == Some(r.state.exit_code)
                }
                "label" => {
                    let labels = r.config.labels.clone().unwrap_or_default();
                    match v.split_once('=') {
                        Some((k, val)) => labels.get(k).is_some_and(|x| x == val),
                        None => labels.contains_key(v.as_str()),
                    }
                }
                "ancestor" => ancestors.contains(&r.image_id) || &r.image_ref == v,
                "network" => {
                    r.host_config.network_mode.as_deref() == Some(v.as_str())
                        || r.network
                            .endpoints
                            .iter()
                            .any(|e| &e.network == v || e.network_id.starts_with(v.as_str()))
                }
                _ => true,
            })
    })
}

/// The `Status` column: "Up 3 seconds", "Exited (0) 2 minutes ago", ...
fn status_text(r: &ContainerRecord, now: i64) -> String {
    let s = &r.state;
    match s.status {
        Status::Created => "Created".into(),
        Status::Running => format!("Up {}", human_duration(now - unix_seconds(&s.started_at))),
        Status::Paused => format!(
            "Up {} (Paused)",
            human_duration(now - unix_seconds(&s.started_at))
        ),
        Status::Restarting => {
            format!(
                "Restarting ({}) {} ago",
                s.exit_code,
                human_duration(now - unix_seconds(&s.finished_at))
            )
        }
        Status::Removing => "Removal In Progress".into(),
        Status::Exited => {
            format!(
                "Exited ({}) {} ago",
                s.exit_code,
                human_duration(now - unix_seconds(&s.finished_at))
            )
        }
        Status::Dead => "Dead".into(),
    }
}

fn summary(r: &ContainerRecord, now: i64) -> ContainerSummary {
    let state = match r.state.status {
        Status::Created => ContainerSummaryStateEnum::CREATED,
        Status::Running => ContainerSummaryStateEnum::RUNNING,
        Status::Paused => ContainerSummaryStateEnum::PAUSED,
        Status::Restarting => ContainerSummaryStateEnum::RESTARTING,
        Status::Removing => ContainerSummaryStateEnum::REMOVING,
        Status::Exited => ContainerSummaryStateEnum::EXITED,
        Status::Dead => ContainerSummaryStateEnum::DEAD,
    };
    let mut command = r.path.clone();
    for a in &r.args {
        command.push(' ');
        command.push_str(a);
    }
    let network_mode = r.host_config.network_mode.clone().unwrap_or_default();
    ContainerSummary {
        id: Some(r.id.clone()),
        names: Some(vec![format!("/{}", r.name)]),
        image: Some(r.image_ref.clone()),
        image_id: Some(r.image_id.clone()),
        command: Some(command),
        created: Some(unix_seconds(&r.created)),
        ports: Some(Vec::new()),
        labels: Some(r.config.labels.clone().unwrap_or_default()),
        state: Some(state),
        status: Some(status_text(r, now)),
        host_config: Some(models::ContainerSummaryHostConfig {
            network_mode: Some(network_mode),
            annotations: None,
        }),
        network_settings: Some(models::ContainerSummaryNetworkSettings {
            networks: Some(HashMap::new()),
        }),
        mounts: Some(Vec::new()),
        ..Default::default()
    }
}
