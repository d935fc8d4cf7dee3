//! `inspect`: a container as Docker's API shows it.

use std::collections::HashMap;
use std::sync::Arc;

use wharf_api::models::{self, ContainerInspectResponse, ContainerStateStatusEnum};

use super::{ContainerError, ContainerRecord, Status};
use crate::Engine;

impl Status {
    pub fn api(self) -> ContainerStateStatusEnum {
        match self {
            Status::Created => ContainerStateStatusEnum::CREATED,
            Status::Running => ContainerStateStatusEnum::RUNNING,
            Status::Paused => ContainerStateStatusEnum::PAUSED,
            Status::Restarting => ContainerStateStatusEnum::RESTARTING,
            Status::Removing => ContainerStateStatusEnum::REMOVING,
            Status::Exited => ContainerStateStatusEnum::EXITED,
            Status::Dead => ContainerStateStatusEnum::DEAD,
        }
    }
}

impl Engine {
    /// `NetworkSettings.Networks`, `.Ports` and the sandbox key, as Docker shows them.
    pub(super) fn network_settings(
        &self,
        r: &ContainerRecord,
    ) -> (
        HashMap<String, models::EndpointSettings>,
        models::PortMap,
        String,
    ) {
        let mode = r.host_config.network_mode.clone().unwrap_or_default();
        let mut networks = HashMap::new();
        for ep in &r.network.endpoints {
            networks.insert(ep.network.clone(), ep.settings());
        }
        if r.network.endpoints.is_empty() && !mode.starts_with("container:") {
            let id = self
                .networks
                .lookup(&mode)
                .map(|n| n.id)
                .unwrap_or_default();
            networks.insert(
                mode.clone(),
                models::EndpointSettings {
                    network_id: Some(id),
                    ..Default::default()
                },
            );
        }
        let running = r.state.status.is_running();
        let ports = if mode == "host" || mode == "none" || mode.starts_with("container:") {
            HashMap::new()
        } else {
            let exposed = r.config.exposed_ports.clone().unwrap_or_default();
            let mut ports = crate::network::ports::port_map(&exposed, &r.network.ports);
            if !running {
                ports.clear();
            }
            ports
        };
        let sandbox = if running && r.state.pid != 0 {
            format!("/proc/{}/ns/net", r.state.pid)
        } else {
            String::new()
        };
        (networks, ports, sandbox)
    }

    pub fn inspect(
        self: &Arc<Self>,
        key: &str,
    ) -> Result<ContainerInspectResponse, ContainerError> {
        let c = self.registry().lookup(key)?;
        let r = c.snapshot();
        let exec_ids = self.exec_ids(&r.id);
        Ok(self.inspect_record(&r, exec_ids))
    }

    fn inspect_record(
        &self,
        r: &ContainerRecord,
        exec_ids: Vec<String>,
    ) -> ContainerInspectResponse {
        let paths = self.container_paths(&r.id);
        let s = &r.state;
        let mut graph = HashMap::new();
        graph.insert("UpperDir".to_string(), paths.upper().display().to_string());
        graph.insert("WorkDir".to_string(), paths.work().display().to_string());
        graph.insert(
            "MergedDir".to_string(),
            paths.rootfs().display().to_string(),
        );
        let (networks, ports, sandbox) = self.network_settings(r);
        ContainerInspectResponse {
            id: Some(r.id.clone()),
            created: Some(r.created.clone()),
            path: Some(r.path.clone()),
            args: Some(r.args.clone()),
            state: Some(models::ContainerState {
                status: Some(s.status.api()),
                running: Some(s.status.is_running()),
                paused: Some(s.status == Status::Paused),
                restarting: Some(s.status == Status::Restarting),
                oom_killed: Some(s.oom_killed),
                dead: Some(s.status == Status::Dead),
                pid: Some(i64::from(s.pid)),
                exit_code: Some(i64::from(s.exit_code)),
                error: Some(s.error.clone()),
                started_at: Some(s.started_at.clone()),
                finished_at: Some(s.finished_at.clone()),
                health: None,
            }),
            image: Some(r.image_id.clone()),
            resolv_conf_path: Some(paths.dir.join("resolv.conf").display().to_string()),
            hostname_path: Some(paths.dir.join("hostname").display().to_string()),
            hosts_path: Some(paths.dir.join("hosts").display().to_string()),
            log_path: Some(paths.log().display().to_string()),
            name: Some(format!("/{}", r.name)),
            restart_count: Some(r.restart_count),
            driver: Some("overlay2".into()),
            platform: Some("linux".into()),
            mount_label: Some(String::new()),
            process_label: Some(String::new()),
            app_armor_profile: Some(String::new()),
            exec_ids: (!exec_ids.is_empty()).then_some(exec_ids),
            host_config: Some(r.host_config.clone()),
            graph_driver: Some(models::DriverData {
                name: "overlay2".into(),
                data: graph,
            }),
            mounts: Some(Vec::new()),
            config: Some(r.config.clone()),
            network_settings: Some(models::NetworkSettings {
                sandbox_id: Some(if sandbox.is_empty() {
                    String::new()
                } else {
                    r.id.clone()
                }),
                sandbox_key: Some(sandbox),
                ports: Some(ports),
                networks: Some(networks),
            }),
            ..Default::default()
        }
    }
}
