//! A container's attachments: what create records, what start reserves (addresses, host
//! ports) and wires (veths, published ports, names), and what exit releases.

use std::collections::HashMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wharf_api::models::{self, EndpointSettings};

use super::ports::{self, Proto, Wanted};
use super::{NetworkError, Networks, VETH_PREFIX, format_mac, lookup_in, netlink, parse_mac};

/// One published port, as wired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub proto: Proto,
    /// 0.0.0.0: every host address.
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
}

/// A container on one network. The fields after `mac_wanted` exist while it runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub network_id: String,
    pub network: String,
    pub aliases: Vec<String>,
    pub ip_wanted: Option<Ipv4Addr>,
    pub mac_wanted: Option<String>,
    pub endpoint_id: String,
    pub ip: Option<Ipv4Addr>,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub mac: Option<String>,
    /// The host end of the veth.
    pub veth: Option<String>,
    /// Names the network's name server answers for this endpoint.
    #[serde(default)]
    pub dns_names: Vec<String>,
}

impl EndpointRecord {
    pub fn settings(&self) -> EndpointSettings {
        let s = |v: Option<String>| Some(v.unwrap_or_default());
        EndpointSettings {
            ipam_config: self.ip_wanted.map(|ip| models::EndpointIpamConfig {
                ipv4_address: Some(ip.to_string()),
                ..Default::default()
            }),
            links: None,
            mac_address: s(self.mac.clone().or_else(|| self.mac_wanted.clone())),
            aliases: (!self.aliases.is_empty()).then(|| self.aliases.clone()),
            driver_opts: None,
            gw_priority: Some(0),
            network_id: Some(self.network_id.clone()),
            endpoint_id: Some(self.endpoint_id.clone()),
            gateway: s(self.gateway.map(|g| g.to_string())),
            ip_address: s(self.ip.map(|g| g.to_string())),
            ip_prefix_len: Some(if self.ip.is_some() {
                i64::from(self.prefix)
            } else {
                0
            }),
            ipv6_gateway: Some(String::new()),
            global_ipv6_address: Some(String::new()),
            global_ipv6_prefix_len: Some(0),
            dns_names: (!self.dns_names.is_empty()).then(|| self.dns_names.clone()),
        }
    }

    fn clear_runtime(&mut self) {
        self.endpoint_id.clear();
        self.ip = None;
        self.prefix = 0;
        self.gateway = None;
        self.mac = None;
        self.veth = None;
        self.dns_names.clear();
    }
}

/// How a container is networked, kept in its record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerNetwork {
    /// Bridge endpoints in interface order (`eth0` first). Empty for none/host/container.
    pub endpoints: Vec<EndpointRecord>,
    /// Published ports while running.
    pub ports: Vec<PortMapping>,
}

impl ContainerNetwork {
    /// The running veths' host ends.
    pub fn veths(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .filter_map(|e| e.veth.clone())
            .collect()
    }

    /// The gateway of the first endpoint (`host-gateway`, the default route).
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.endpoints.first().and_then(|e| e.gateway)
    }

    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.endpoints.first().and_then(|e| e.ip)
    }
}

/// What start needs to know about the container to attach it.
/// The network namespace endpoints are wired into.
enum Namespace {
    /// That of a running process.
    Pid(u32),
    /// One held by a handle, made before the container.
    Handle(Arc<File>),
}

pub struct Attach<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub ports: &'a [Wanted],
}

impl Networks {
    /// Resolves `NetworkMode` and `NetworkingConfig` at create: the endpoints to attach at
    /// start. `none`, `host` and `container:` give none.
    pub fn plan(
        &self,
        mode: &str,
        configs: &HashMap<String, EndpointSettings>,
    ) -> Result<(String, ContainerNetwork), NetworkError> {
        let s = self.state();
        let mode = match mode {
            "" | "default" => super::BRIDGE.to_string(),
            m => m.to_string(),
        };
        // Clients name the default network "default" in `EndpointsConfig` too.
        let configs: HashMap<String, EndpointSettings> = configs
            .iter()
            .map(|(k, v)| {
                let k = if k == "default" { super::BRIDGE } else { k };
                (k.to_string(), v.clone())
            })
            .collect();
        let configs = &configs;
        if mode.starts_with("container:") {
            return Ok((mode, ContainerNetwork::default()));
        }
        let primary = lookup_in(&s, &mode)?;
        if !primary.rec.is_bridge() {
            if configs.keys().any(|k| k != &primary.rec.name && k != &mode) {
                return Err(NetworkError::Invalid(format!(
                    "container cannot be connected to multiple networks with one of the networks in {} mode",
                    primary.rec.name
                )));
            }
            return Ok((primary.rec.name.clone(), ContainerNetwork::default()));
        }
        let mut order: Vec<(String, Option<&EndpointSettings>)> = vec![(
            mode.clone(),
            configs.get(&mode).or(configs.get(&primary.rec.name)),
        )];
        let mut rest: Vec<(&String, &EndpointSettings)> = configs
            .iter()
            .filter(|(k, _)| **k != mode && **k != primary.rec.name)
            .collect();
        rest.sort_by_key(|(k, _)| (*k).clone());
        order.extend(rest.into_iter().map(|(k, v)| (k.clone(), Some(v))));
        let mut out = ContainerNetwork::default();
        for (key, cfg) in order {
            let net = lookup_in(&s, &key)?;
            if !net.rec.is_bridge() {
                return Err(NetworkError::Invalid(format!(
                    "container cannot be connected to multiple networks with one of the networks in {} mode",
                    net.rec.name
                )));
            }
            if out.endpoints.iter().any(|e| e.network_id == net.rec.id) {
                continue;
            }
            out.endpoints.push(endpoint_config(net, cfg)?);
        }
        let name = primary.rec.name.clone();
        let mode = if name == super::BRIDGE && (mode == "bridge" || mode == "default") {
            mode
        } else {
            name
        };
        Ok((mode, out))
    }

    /// Reserves addresses and host ports and fills the endpoints' runtime fields. All or
    /// nothing: on an error nothing stays reserved.
    pub fn reserve(&self, a: &Attach<'_>, net: &mut ContainerNetwork) -> Result<(), NetworkError> {
        let mut s = self.state();
        let mut done: Vec<(String, Ipv4Addr)> = Vec::new();
        let mut result = Ok(());
        for ep in net.endpoints.iter_mut() {
            let n = match s.nets.get_mut(&ep.network_id) {
                Some(n) => n,
                None => {
                    result = Err(NetworkError::NotFound(ep.network.clone()));
                    break;
                }
            };
            match n.allocate(ep.ip_wanted, a.id) {
                Ok(ip) => {
                    done.push((ep.network_id.clone(), ip));
                    ep.ip = Some(ip);
                    ep.prefix = n.rec.subnet.map(|s| s.prefix_len()).unwrap_or(0);
                    ep.gateway = n.rec.gateway;
                    ep.endpoint_id = crate::util::random_id();
                    ep.mac = Some(
                        ep.mac_wanted
                            .clone()
                            .unwrap_or_else(|| format_mac(&super::random_mac())),
                    );
                    ep.veth = Some(veth_name());
                    if n.rec.has_dns() {
                        let mut names = vec![a.name.to_string(), a.id[..12].to_string()];
                        names.extend(ep.aliases.iter().cloned());
                        ep.dns_names = names;
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok()
            && !a.ports.is_empty()
            && let Some(ip) = net.ip()
        {
            match ports::reserve(&mut s, a.id, ip, a.ports) {
                Ok(m) => net.ports = m,
                Err(e) => result = Err(e),
            }
        }
        if let Err(e) = result {
            for (nid, ip) in done {
                if let Some(n) = s.nets.get_mut(&nid) {
                    n.release(ip, a.id);
                }
            }
            for ep in net.endpoints.iter_mut() {
                ep.clear_runtime();
            }
            return Err(e);
        }
        Ok(())
    }

    /// Makes the veths into the namespace of `pid`, addresses and routes there, then the
    /// published ports and names.
    pub async fn wire(
        &self,
        id: &str,
        pid: u32,
        net: &ContainerNetwork,
    ) -> Result<(), NetworkError> {
        self.wire_into(id, Namespace::Pid(pid), net, 0).await
    }

    /// [`Networks::wire`] into a namespace made ahead of the container
    /// ([`netlink::new_namespace`]), which the container then joins: the wiring runs while
    /// the runtime creates the container instead of after.
    pub async fn wire_ahead(
        &self,
        id: &str,
        ns: Arc<File>,
        net: &ContainerNetwork,
    ) -> Result<(), NetworkError> {
        self.wire_into(id, Namespace::Handle(ns), net, 0).await
    }

    /// [`Networks::wire`] for endpoints that become `eth<first>`, `eth<first+1>`, ...
    pub async fn wire_from(
        &self,
        id: &str,
        pid: u32,
        net: &ContainerNetwork,
        first: usize,
    ) -> Result<(), NetworkError> {
        self.wire_into(id, Namespace::Pid(pid), net, first).await
    }

    async fn wire_into(
        &self,
        id: &str,
        ns: Namespace,
        net: &ContainerNetwork,
        first: usize,
    ) -> Result<(), NetworkError> {
        if net.endpoints.is_empty() {
            return Ok(());
        }
        let plan: Vec<Wiring> = {
            let s = self.state();
            let mut plan = Vec::new();
            for (i, ep) in net.endpoints.iter().enumerate() {
                let n = s
                    .nets
                    .get(&ep.network_id)
                    .ok_or_else(|| NetworkError::NotFound(ep.network.clone()))?;
                let (Some(ip), Some(veth)) = (ep.ip, ep.veth.clone()) else {
                    continue;
                };
                let mac = parse_mac(ep.mac.as_deref().unwrap_or_default())?;
                let route = (i + first == 0 && !n.rec.internal)
                    .then_some(ep.gateway)
                    .flatten();
                plan.push(Wiring {
                    bridge: n.rec.bridge.clone(),
                    veth,
                    ip,
                    prefix: ep.prefix,
                    route,
                    mac,
                });
            }
            plan
        };
        let mtu = self.opts.mtu;
        tokio::task::spawn_blocking(move || -> Result<(), NetworkError> {
            let mut host = netlink::Netlink::open()?;
            let mut inner = match &ns {
                Namespace::Pid(pid) => netlink::Netlink::open_in(*pid)?,
                Namespace::Handle(file) => netlink::Netlink::open_in_namespace(file.clone())?,
            };
            let peer_ns = match &ns {
                Namespace::Pid(pid) => netlink::PeerNamespace::Pid(*pid),
                Namespace::Handle(file) => netlink::PeerNamespace::Handle(file),
            };
            for (i, w) in plan.iter().enumerate() {
                let peer = format!("eth{}", i + first);
                let master = host
                    .link_index(&w.bridge)?
                    .ok_or_else(|| NetworkError::NotFound(format!("bridge {}", w.bridge)))?;
                host.add_veth(&w.veth, &peer, peer_ns, Some(w.mac), mtu)?;
                let index = host
                    .link_index(&w.veth)?
                    .ok_or_else(|| NetworkError::NotFound(format!("veth {}", w.veth)))?;
                host.set_up(index, Some(master))?;
                let inside = inner
                    .link_index(&peer)?
                    .ok_or_else(|| NetworkError::NotFound(format!("{peer} in the container")))?;
                inner.add_addr(inside, w.ip, w.prefix)?;
                inner.set_up(inside, None)?;
                if let Some(gw) = w.route {
                    inner.add_default_route(gw)?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| NetworkError::Firewall(format!("wiring the container: {e}")))??;
        let ready = self.state().firewall_ready;
        if ready {
            self.firewall.add_ports(&net.ports).await?;
        }
        let mut s = self.state();
        if first == 0 {
            s.mappings.insert(id.to_string(), net.ports.clone());
        }
        for ep in &net.endpoints {
            if let (Some(n), Some(ip)) = (s.nets.get(&ep.network_id), ep.ip)
                && !ep.dns_names.is_empty()
            {
                n.names.add(id, &ep.dns_names, ip);
            }
        }
        Ok(())
    }

    /// Undoes [`Networks::reserve`] and [`Networks::wire`]; safe to call more than once.
    pub async fn release(&self, id: &str, net: &mut ContainerNetwork) {
        let (ports, ready) = {
            let mut s = self.state();
            let ports = s.mappings.remove(id).unwrap_or_default();
            ports::release(&mut s, id, &net.ports);
            (ports, s.firewall_ready)
        };
        if ready
            && !ports.is_empty()
            && let Err(e) = self.firewall.remove_ports(&ports).await
        {
            tracing::warn!(container = %id, error = %e, "removing published ports");
        }
        net.ports.clear();
        self.release_endpoint(id, net).await;
    }

    /// Releases the endpoints of `net` (addresses, names, veths), not its ports.
    pub async fn release_endpoint(&self, id: &str, net: &mut ContainerNetwork) {
        {
            let mut s = self.state();
            for ep in &net.endpoints {
                if let Some(n) = s.nets.get_mut(&ep.network_id) {
                    n.names.remove(id);
                    if let Some(ip) = ep.ip {
                        n.release(ip, id);
                    }
                }
            }
        }
        let veths = net.veths();
        if !veths.is_empty() {
            // The kernel drops the pair with the container's namespace; deleting the host end
            // makes that happen now rather than when the namespace is reclaimed. Deleting a link
            // waits for the kernel's RCU grace period: nobody waits for it.
            drop(tokio::task::spawn_blocking(move || {
                if let Ok(mut nl) = netlink::Netlink::open() {
                    for v in veths {
                        let _ = nl.del_link(&v);
                    }
                }
            }));
        }
        for ep in net.endpoints.iter_mut() {
            ep.clear_runtime();
        }
    }

    /// Takes a running container's reservations back after a daemon restart.
    pub fn restore(&self, id: &str, net: &ContainerNetwork) {
        let mut s = self.state();
        for ep in &net.endpoints {
            if let (Some(n), Some(ip)) = (s.nets.get_mut(&ep.network_id), ep.ip) {
                n.used.insert(ip, id.to_string());
                if !ep.dns_names.is_empty() {
                    n.names.add(id, &ep.dns_names, ip);
                }
            }
        }
        for m in &net.ports {
            s.ports
                .insert((m.proto, m.host_ip, m.host_port), id.to_string());
        }
        s.mappings.insert(id.to_string(), net.ports.clone());
    }
}

/// An endpoint's create-time settings from its `EndpointSettings`.
fn endpoint_config(
    net: &super::Net,
    cfg: Option<&EndpointSettings>,
) -> Result<EndpointRecord, NetworkError> {
    let mut ep = EndpointRecord {
        network_id: net.rec.id.clone(),
        network: net.rec.name.clone(),
        ..Default::default()
    };
    let Some(cfg) = cfg else {
        return Ok(ep);
    };
    let aliases = cfg.aliases.clone().unwrap_or_default();
    let ip = cfg
        .ipam_config
        .as_ref()
        .and_then(|c| c.ipv4_address.clone())
        .filter(|s| !s.is_empty());
    if net.rec.builtin && (!aliases.is_empty() || ip.is_some()) {
        return Err(NetworkError::Invalid(
            "user specified IP address is supported on user defined networks only".into(),
        ));
    }
    if let Some(ip) = ip {
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| NetworkError::Invalid(format!("invalid IPv4 address: {ip}")))?;
        if !net.rec.subnet.is_some_and(|s| s.contains(&ip)) {
            return Err(NetworkError::Invalid(format!(
                "no configured subnet or ip-range contain the IP address {ip}"
            )));
        }
        ep.ip_wanted = Some(ip);
    }
    if let Some(mac) = cfg.mac_address.clone().filter(|m| !m.is_empty()) {
        parse_mac(&mac)?;
        ep.mac_wanted = Some(mac.to_ascii_lowercase());
    }
    ep.aliases = aliases;
    Ok(ep)
}

/// One veth to make: which bridge, names, address, and the default route if it carries it.
struct Wiring {
    bridge: String,
    veth: String,
    ip: Ipv4Addr,
    prefix: u8,
    route: Option<Ipv4Addr>,
    mac: [u8; 6],
}

fn veth_name() -> String {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    format!("{VETH_PREFIX}{}", hex::encode(b))
}
