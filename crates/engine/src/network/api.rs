//! The `/networks` verbs: create, list, inspect, remove, prune, connect, disconnect.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use wharf_api::Filters;
use wharf_api::models::{self, NetworkCreateRequest, NetworkCreateResponse, NetworkInspect};

use super::endpoint::{Attach, ContainerNetwork};
use super::ipam::{default_gateway, overlaps};
use super::{NetworkError, NetworkRecord, netlink};
use crate::container::ContainerError;
use crate::meta::Table;
use crate::{Engine, Status};

/// What `network create` asks for, validated.
pub struct NetworkCreate {
    pub name: String,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
}

impl Engine {
    pub async fn network_create(
        self: &Arc<Self>,
        req: NetworkCreateRequest,
    ) -> Result<NetworkCreateResponse, NetworkError> {
        let driver = req
            .driver
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or("bridge".into());
        if driver != "bridge" {
            return Err(NetworkError::Invalid(format!(
                "plugin \"{driver}\" not found (wharf has the bridge driver)"
            )));
        }
        if req.name.is_empty() || !valid_network_name(&req.name) {
            return Err(NetworkError::Invalid(format!(
                "invalid network name \"{}\"",
                req.name
            )));
        }
        if req.enable_ipv6 == Some(true) {
            return Err(NetworkError::Invalid(
                "IPv6 networks are not supported".into(),
            ));
        }
        let nets = &self.networks;
        if nets.records().iter().any(|r| r.name == req.name) {
            return Err(NetworkError::Conflict(format!(
                "network with name {} already exists",
                req.name
            )));
        }
        let configs = req
            .ipam
            .as_ref()
            .and_then(|i| i.config.clone())
            .unwrap_or_default();
        if configs.len() > 1 {
            return Err(NetworkError::Invalid(
                "only one IPv4 subnet per network".into(),
            ));
        }
        let cfg = configs.into_iter().next().unwrap_or_default();
        let parse_net = |s: &Option<String>, what: &str| -> Result<Option<Ipv4Net>, NetworkError> {
            match s.as_deref().filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(v) => v
                    .parse::<Ipv4Net>()
                    .map(|n| Some(n.trunc()))
                    .map_err(|_| NetworkError::Invalid(format!("invalid {what}: {v}"))),
            }
        };
        let subnet_wanted = parse_net(&cfg.subnet, "subnet")?;
        let ip_range = parse_net(&cfg.ip_range, "ip-range")?;
        let gateway = match cfg.gateway.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(g) => Some(
                g.parse::<Ipv4Addr>()
                    .map_err(|_| NetworkError::Invalid(format!("invalid gateway: {g}")))?,
            ),
        };
        if subnet_wanted.is_none() && (gateway.is_some() || ip_range.is_some()) {
            return Err(NetworkError::Invalid(
                "gateway and ip-range need a subnet".into(),
            ));
        }
        let taken: Vec<Ipv4Net> = nets.records().iter().filter_map(|r| r.subnet).collect();
        let subnet = match subnet_wanted {
            Some(s) => {
                if let Some(t) = taken.iter().find(|t| overlaps(t, &s)) {
                    return Err(NetworkError::Conflict(format!(
                        "invalid pool request: Pool overlaps with other one on this address space ({t})"
                    )));
                }
                s
            }
            None => {
                let mut avoid = taken.clone();
                if let Ok(mut nl) = netlink::Netlink::open() {
                    for (d, p) in nl.route_destinations().unwrap_or_default() {
                        if let Ok(n) = Ipv4Net::new(d, p) {
                            avoid.push(n.trunc());
                        }
                    }
                }
                nets.opts.pool.next_free(&avoid).ok_or_else(|| {
                    NetworkError::Conflict(
                        "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network".into(),
                    )
                })?
            }
        };
        if let Some(r) = ip_range
            && !subnet.contains(&r)
        {
            return Err(NetworkError::Invalid(format!(
                "ip-range {r} is not within subnet {subnet}"
            )));
        }
        let gateway = gateway.unwrap_or_else(|| default_gateway(&subnet));
        if !subnet.contains(&gateway) {
            return Err(NetworkError::Invalid(format!(
                "gateway {gateway} is not within subnet {subnet}"
            )));
        }
        let id = crate::util::random_id();
        let options = req.options.clone().unwrap_or_default();
        let bridge = options
            .get("com.docker.network.bridge.name")
            .cloned()
            .unwrap_or_else(|| format!("wh-{}", &id[..12]));
        if bridge.is_empty() || bridge.len() > 15 || bridge.contains(['/', ' ']) {
            return Err(NetworkError::Invalid(format!(
                "invalid bridge name: {bridge}"
            )));
        }
        if nets.records().iter().any(|r| r.bridge == bridge) {
            return Err(NetworkError::Conflict(format!(
                "bridge name {bridge} is already in use"
            )));
        }
        let rec = NetworkRecord {
            id: id.clone(),
            name: req.name.clone(),
            driver,
            created: crate::util::now_rfc3339(),
            subnet: Some(subnet),
            gateway: Some(gateway),
            ip_range,
            internal: req.internal.unwrap_or(false),
            attachable: req.attachable.unwrap_or(false),
            labels: req.labels.clone().unwrap_or_default(),
            options,
            bridge,
            builtin: false,
            user_subnet: subnet_wanted.is_some(),
        };
        {
            let mut nl = netlink::Netlink::open()?;
            if let Err(e) = nets.bring_up(&mut nl, &rec) {
                let _ = nets.take_down(&mut nl, &rec);
                return Err(e);
            }
        }
        nets.insert(rec.clone());
        if let Err(e) = nets.sync(&self.live_veths()).await.and_then(|()| {
            nets.meta.put(Table::Networks, &rec.id, &rec)?;
            Ok(())
        }) {
            self.forget_network(&rec).await;
            return Err(e);
        }
        Ok(NetworkCreateResponse {
            id,
            warning: String::new(),
        })
    }

    async fn forget_network(self: &Arc<Self>, rec: &NetworkRecord) {
        let nets = &self.networks;
        if let Some(n) = nets.state().nets.remove(&rec.id)
            && let Some(h) = n.dns
        {
            h.abort();
        }
        if let Ok(mut nl) = netlink::Netlink::open() {
            let _ = nets.take_down(&mut nl, rec);
        }
        let _ = nets.sync(&self.live_veths()).await;
    }

    /// The host ends of every running container's veths.
    pub(crate) fn live_veths(&self) -> Vec<String> {
        self.registry()
            .all()
            .iter()
            .flat_map(|c| c.record().network.veths())
            .collect()
    }

    pub fn network_list(&self, filters: &Filters) -> Result<Vec<NetworkInspect>, NetworkError> {
        for key in filters.keys() {
            if !matches!(
                key.as_str(),
                "name" | "id" | "driver" | "label" | "type" | "scope" | "dangling"
            ) {
                return Err(NetworkError::Invalid(format!("invalid filter '{key}'")));
            }
        }
        let mut recs = self.networks.records();
        recs.sort_by(|a, b| a.name.cmp(&b.name));
        let in_use = self.networks_in_use(false);
        Ok(recs
            .iter()
            .filter(|r| {
                filters.iter().all(|(key, values)| {
                    values.is_empty()
                        || values.iter().any(|v| match key.as_str() {
                            "name" => r.name.contains(v.as_str()),
                            "id" => r.id.starts_with(v.as_str()),
                            "driver" => &r.driver == v,
                            "scope" => v == "local",
                            "type" => (v == "builtin") == r.builtin,
                            "dangling" => {
                                (v == "true" || v == "1") == (!r.builtin && !in_use.contains(&r.id))
                            }
                            "label" => match v.split_once('=') {
                                Some((k, val)) => r.labels.get(k).is_some_and(|x| x == val),
                                None => r.labels.contains_key(v.as_str()),
                            },
                            _ => true,
                        })
                })
            })
            .map(|r| self.network_model(r, false))
            .collect())
    }

    pub fn network_inspect(&self, key: &str) -> Result<NetworkInspect, NetworkError> {
        let rec = self.networks.lookup(key)?;
        Ok(self.network_model(&rec, true))
    }

    fn network_model(&self, r: &NetworkRecord, with_containers: bool) -> NetworkInspect {
        let mut containers = HashMap::new();
        if with_containers {
            for c in self.registry().all() {
                let rec = c.record();
                if !rec.state.status.is_running() {
                    continue;
                }
                let mode = rec.host_config.network_mode.clone().unwrap_or_default();
                if !r.is_bridge() && (mode == r.name || mode == r.id) {
                    containers.insert(
                        rec.id.clone(),
                        models::EndpointResource {
                            name: Some(rec.name.clone()),
                            endpoint_id: Some(String::new()),
                            mac_address: Some(String::new()),
                            ipv4_address: Some(String::new()),
                            ipv6_address: Some(String::new()),
                        },
                    );
                }
                for ep in rec
                    .network
                    .endpoints
                    .iter()
                    .filter(|e| e.network_id == r.id)
                {
                    let Some(ip) = ep.ip else { continue };
                    containers.insert(
                        rec.id.clone(),
                        models::EndpointResource {
                            name: Some(rec.name.clone()),
                            endpoint_id: Some(ep.endpoint_id.clone()),
                            mac_address: Some(ep.mac.clone().unwrap_or_default()),
                            ipv4_address: Some(format!("{ip}/{}", ep.prefix)),
                            ipv6_address: Some(String::new()),
                        },
                    );
                }
            }
        }
        let ipam_config: Vec<models::IpamConfig> = r
            .subnet
            .map(|s| models::IpamConfig {
                subnet: Some(s.to_string()),
                ip_range: r.ip_range.map(|x| x.to_string()),
                gateway: r.gateway.map(|g| g.to_string()),
                auxiliary_addresses: None,
            })
            .into_iter()
            .collect();
        NetworkInspect {
            name: Some(r.name.clone()),
            id: Some(r.id.clone()),
            created: Some(r.created.clone()),
            scope: Some("local".into()),
            driver: Some(r.driver.clone()),
            enable_ipv4: Some(r.is_bridge()),
            enable_ipv6: Some(false),
            ipam: Some(models::Ipam {
                driver: Some("default".into()),
                config: Some(ipam_config),
                options: Some(HashMap::new()),
            }),
            internal: Some(r.internal),
            attachable: Some(r.attachable),
            ingress: Some(false),
            config_from: Some(models::ConfigReference {
                network: Some(String::new()),
            }),
            config_only: Some(false),
            options: Some(r.options.clone()),
            labels: Some(r.labels.clone()),
            peers: None,
            containers: Some(containers),
            services: None,
            status: None,
        }
    }

    /// Ids of networks with an endpoint of a running (or, with `any`, any) container.
    fn networks_in_use(&self, any: bool) -> Vec<String> {
        self.registry()
            .all()
            .iter()
            .flat_map(|c| {
                let r = c.record();
                if !any && !r.state.status.is_running() {
                    return Vec::new();
                }
                r.network
                    .endpoints
                    .iter()
                    .map(|e| e.network_id.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub async fn network_remove(self: &Arc<Self>, key: &str) -> Result<(), NetworkError> {
        let rec = self.networks.lookup(key)?;
        if rec.builtin {
            return Err(NetworkError::Invalid(format!(
                "{} is a pre-defined network and cannot be removed",
                rec.name
            )));
        }
        if self.networks_in_use(false).contains(&rec.id) {
            return Err(NetworkError::Conflict(format!(
                "error while removing network: network {} id {} has active endpoints",
                rec.name, rec.id
            )));
        }
        self.networks.meta.delete(Table::Networks, &rec.id)?;
        self.forget_network(&rec).await;
        Ok(())
    }

    pub async fn network_prune(
        self: &Arc<Self>,
        filters: &Filters,
    ) -> Result<models::NetworkPruneResponse, NetworkError> {
        let in_use = self.networks_in_use(false);
        let mut deleted = Vec::new();
        for r in self.networks.records() {
            if r.builtin || in_use.contains(&r.id) {
                continue;
            }
            let keep =
                filters
                    .get("label")
                    .into_iter()
                    .flatten()
                    .any(|v| !match v.split_once('=') {
                        Some((k, val)) => r.labels.get(k).is_some_and(|x| x == val),
                        None => r.labels.contains_key(v.as_str()),
                    });
            if keep {
                continue;
            }
            self.network_remove(&r.id).await?;
            deleted.push(r.name.clone());
        }
        Ok(models::NetworkPruneResponse {
            networks_deleted: Some(deleted),
        })
    }

    pub async fn network_connect(
        self: &Arc<Self>,
        key: &str,
        req: models::NetworkConnectRequest,
    ) -> Result<(), ContainerError> {
        let net = self.networks.lookup(key)?;
        let c = self.registry().lookup(&req.container)?;
        let _op = c.op.lock().await;
        let rec = c.snapshot();
        let mode = rec.host_config.network_mode.clone().unwrap_or_default();
        let bridged = !rec.network.endpoints.is_empty()
            || self.networks.lookup(&mode).is_ok_and(|n| n.is_bridge());
        if !net.is_bridge() || !bridged {
            return Err(NetworkError::Invalid(format!(
                "container cannot be connected to network {} in network mode {mode}",
                net.name
            ))
            .into());
        }
        if rec.network.endpoints.iter().any(|e| e.network_id == net.id) {
            return Err(NetworkError::Conflict(format!(
                "endpoint with name {} already exists in network {}",
                rec.name, net.name
            ))
            .into());
        }
        let mut configs = HashMap::new();
        configs.insert(
            net.name.clone(),
            req.endpoint_config.clone().unwrap_or_default(),
        );
        let (_, planned) = self.networks.plan(&net.name, &configs)?;
        let mut one = ContainerNetwork {
            endpoints: planned.endpoints,
            ports: Vec::new(),
        };
        if rec.state.status.is_running() {
            self.networks.reserve(
                &Attach {
                    id: &rec.id,
                    name: &rec.name,
                    ports: &[],
                },
                &mut one,
            )?;
            let index = rec.network.endpoints.len();
            if let Err(e) = self
                .networks
                .wire_from(&rec.id, rec.state.pid, &one, index)
                .await
            {
                self.networks.release(&rec.id, &mut one).await;
                return Err(e.into());
            }
        }
        let snapshot = {
            let mut r = c.record();
            r.network.endpoints.extend(one.endpoints);
            r.clone()
        };
        self.meta.put(Table::Containers, &snapshot.id, &snapshot)?;
        Ok(())
    }

    pub async fn network_disconnect(
        self: &Arc<Self>,
        key: &str,
        req: models::NetworkDisconnectRequest,
    ) -> Result<(), ContainerError> {
        let net = self.networks.lookup(key)?;
        let c = self.registry().lookup(&req.container)?;
        let _op = c.op.lock().await;
        let rec = c.snapshot();
        let Some(pos) = rec
            .network
            .endpoints
            .iter()
            .position(|e| e.network_id == net.id)
        else {
            return Err(NetworkError::Invalid(format!(
                "container {} is not connected to network {}",
                rec.id, net.name
            ))
            .into());
        };
        let mut one = ContainerNetwork {
            endpoints: vec![rec.network.endpoints[pos].clone()],
            ports: Vec::new(),
        };
        if rec.state.status.is_running() || rec.state.status == Status::Restarting {
            self.networks.release_endpoint(&rec.id, &mut one).await;
        }
        let snapshot = {
            let mut r = c.record();
            r.network.endpoints.retain(|e| e.network_id != net.id);
            r.clone()
        };
        self.meta.put(Table::Containers, &snapshot.id, &snapshot)?;
        Ok(())
    }
}

/// Docker's network name rule.
fn valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}
