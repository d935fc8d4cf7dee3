//! Networks: Docker's bridge model. Each bridge network is a Linux bridge with the gateway
//! address, an IPv4 subnet managed here (IPAM), outbound masquerade and published ports in
//! one nftables table, and (user networks) a name server on the gateway address.
//!
//! A container on a bridge network lives in the network namespace its runtime made; after the
//! shim has created the container (and before its process runs) a veth pair is made with one
//! end in that namespace (`eth0`, `eth1`, ...) and the other a port of the bridge. When the
//! container's last process exits the kernel removes the namespace and both veth ends with it,
//! so a crash leaves no interface behind; the engine still deletes the host end itself at exit.
//!
//! What lives in the host and how it is found again after a daemon restart:
//! ```text
//! bridges         one per bridge network (default: `wharf0`; user: `wh-<id12>`)
//! veths           `whv<8 hex>` host ends, one per attached endpoint
//! nft table       `ip wharf` (another name when the daemon runs with another bridge), rebuilt
//!                 whole and atomically at daemon start from the networks and running containers
//! iptables        two FORWARD accept rules per bridge (hosts where Docker set policy DROP)
//! name servers    UDP <gateway>:53 per user network, inside the daemon
//! ```
//! A daemon stopped (SIGTERM) with no container running removes all of it; it is made again
//! at the next start.

mod api;
mod dns;
mod endpoint;
mod firewall;
mod ipam;
pub mod netlink;
pub mod ports;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::ErrorKind;
use crate::meta::{Meta, Table};

pub use api::NetworkCreate;
pub use endpoint::{Attach, ContainerNetwork, EndpointRecord, PortMapping};
pub use firewall::Firewall;
pub use ipam::AddressPool;

/// The names of the networks every daemon has.
pub const BRIDGE: &str = "bridge";
pub const HOST: &str = "host";
pub const NONE: &str = "none";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    #[error("{context}")]
    Command {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Firewall(String),
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl NetworkError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            NetworkError::NotFound(_) => ErrorKind::NotFound,
            NetworkError::Invalid(_) => ErrorKind::Invalid,
            NetworkError::Conflict(_) => ErrorKind::Conflict,
            _ => ErrorKind::Internal,
        }
    }
}

/// Daemon options for networking (flags or `<root>/daemon.json`).
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    /// The default bridge's device name.
    pub bridge: String,
    /// The default bridge's gateway address and subnet (`--bip`, "10.89.0.1/24").
    pub bip: Ipv4Net,
    /// Where user networks without `--subnet` get theirs.
    pub pool: AddressPool,
    /// The MTU of bridges and veths (0: the kernel's default).
    pub mtu: u32,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        NetworkOptions {
            bridge: "wharf0".into(),
            bip: Ipv4Net::new(Ipv4Addr::new(10, 89, 0, 1), 24).unwrap_or_default(),
            pool: AddressPool {
                base: Ipv4Net::new(Ipv4Addr::new(10, 89, 0, 0), 16).unwrap_or_default(),
                size: 24,
            },
            mtu: 0,
        }
    }
}

impl NetworkOptions {
    /// The nftables table of this daemon: bridges and subnets differ between daemons that
    /// share a host, so does the table.
    pub fn table(&self) -> String {
        if self.bridge == "wharf0" {
            "wharf".into()
        } else {
            format!("wharf-{}", self.bridge)
        }
    }
}

/// A network as stored in metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    /// "bridge", "host" or "null".
    pub driver: String,
    pub created: String,
    /// Absent for host and null networks.
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
    pub internal: bool,
    pub attachable: bool,
    pub labels: HashMap<String, String>,
    pub options: HashMap<String, String>,
    /// The bridge device.
    pub bridge: String,
    /// `bridge`, `host` and `none`: made by the daemon, never removed.
    pub builtin: bool,
    /// Whether `--subnet` was given (Docker shows IPAM config either way).
    #[serde(default)]
    pub user_subnet: bool,
}

impl NetworkRecord {
    pub fn is_bridge(&self) -> bool {
        self.driver == "bridge"
    }

    /// User-defined bridge networks get name resolution; the default bridge does not.
    pub fn has_dns(&self) -> bool {
        self.is_bridge() && !self.builtin
    }
}

/// One live network: its record, its address bookkeeping and its name records.
pub(crate) struct Net {
    pub rec: NetworkRecord,
    /// Addresses in use, by container id.
    pub used: HashMap<Ipv4Addr, String>,
    /// Where the next automatic address search starts (addresses are not reused at once).
    pub next: u32,
    pub names: Arc<dns::Names>,
    pub dns: Option<tokio::task::AbortHandle>,
}

/// The engine's networks; one per engine.
pub struct Networks {
    pub opts: NetworkOptions,
    meta: Arc<Meta>,
    state: Mutex<State>,
    pub(crate) firewall: Firewall,
    /// Host name servers (the daemon's resolv.conf), for names the networks do not know.
    upstream: Vec<std::net::SocketAddr>,
    /// Empty network namespaces for containers about to start.
    pub namespaces: Arc<netlink::NamespacePool>,
}

#[derive(Default)]
pub(crate) struct State {
    /// By id.
    pub nets: HashMap<String, Net>,
    /// Published host ports in use: (proto, host ip or 0.0.0.0, port) -> container id.
    pub ports: BTreeMap<(ports::Proto, Ipv4Addr, u16), String>,
    /// Per-container published ports, for the firewall rebuild.
    pub mappings: HashMap<String, Vec<PortMapping>>,
    /// False until the firewall has been rebuilt after a start: per-container rule changes
    /// before that are left to the rebuild.
    pub firewall_ready: bool,
}

impl Networks {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // Plain maps: a panic while held cannot leave them torn in a way that matters.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the networks, makes the predefined ones, and puts every bridge in place.
    /// The firewall is rebuilt by [`Networks::sync`] once running containers are known.
    pub async fn open(opts: NetworkOptions, meta: Arc<Meta>) -> Result<Networks, NetworkError> {
        let firewall = Firewall::new(opts.table());
        let upstream = dns::host_resolvers();
        let nets = Networks {
            opts,
            meta,
            state: Mutex::new(State::default()),
            firewall,
            upstream,
            namespaces: Arc::default(),
        };
        let mut records: Vec<NetworkRecord> = nets
            .meta
            .list::<NetworkRecord>(Table::Networks)?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        for (name, driver) in [(BRIDGE, "bridge"), (HOST, "host"), (NONE, "null")] {
            match records.iter_mut().find(|r| r.name == name) {
                Some(r) if name == BRIDGE => {
                    // The daemon's options rule the default bridge.
                    if r.bridge != nets.opts.bridge
                        || r.gateway != Some(nets.opts.bip.addr())
                        || r.subnet != Some(nets.opts.bip.trunc())
                    {
                        r.bridge = nets.opts.bridge.clone();
                        r.gateway = Some(nets.opts.bip.addr());
                        r.subnet = Some(nets.opts.bip.trunc());
                        nets.meta.put(Table::Networks, &r.id, r)?;
                    }
                }
                Some(_) => {}
                None => {
                    let r = nets.predefined(name, driver);
                    nets.meta.put(Table::Networks, &r.id, &r)?;
                    records.push(r);
                }
            }
        }
        nets.firewall.enable_forwarding();
        let mut nl = netlink::Netlink::open()?;
        for r in records {
            if r.is_bridge()
                && let Err(e) = nets.bring_up(&mut nl, &r)
            {
                tracing::error!(network = %r.name, error = %e, "setting up network");
            }
            nets.insert(r);
        }
        Ok(nets)
    }

    fn predefined(&self, name: &str, driver: &str) -> NetworkRecord {
        let bridge = name == BRIDGE;
        let mut options = HashMap::new();
        if bridge {
            options.insert(
                "com.docker.network.bridge.name".into(),
                self.opts.bridge.clone(),
            );
            options.insert(
                "com.docker.network.bridge.default_bridge".into(),
                "true".into(),
            );
            options.insert(
                "com.docker.network.bridge.enable_ip_masquerade".into(),
                "true".into(),
            );
        }
        NetworkRecord {
            id: crate::util::random_id(),
            name: name.into(),
            driver: driver.into(),
            created: crate::util::now_rfc3339(),
            subnet: bridge.then(|| self.opts.bip.trunc()),
            gateway: bridge.then(|| self.opts.bip.addr()),
            ip_range: None,
            internal: false,
            attachable: false,
            labels: HashMap::new(),
            options,
            bridge: if bridge {
                self.opts.bridge.clone()
            } else {
                String::new()
            },
            builtin: true,
            user_subnet: false,
        }
    }

    fn insert(&self, rec: NetworkRecord) {
        let dns = if rec.has_dns() { rec.gateway } else { None };
        let names = Arc::new(dns::Names::default());
        let handle = dns.and_then(|gw| dns::serve(gw, names.clone(), self.upstream.clone()));
        self.state().nets.insert(
            rec.id.clone(),
            Net {
                rec,
                used: HashMap::new(),
                next: 0,
                names,
                dns: handle,
            },
        );
    }

    /// The bridge device with its gateway address, up; the forward accept rules.
    fn bring_up(&self, nl: &mut netlink::Netlink, r: &NetworkRecord) -> Result<(), NetworkError> {
        let (Some(subnet), Some(gw)) = (r.subnet, r.gateway) else {
            return Ok(());
        };
        let index = match nl.link_index(&r.bridge)? {
            Some(i) => i,
            None => {
                nl.add_bridge(&r.bridge, random_mac(), self.opts.mtu)?;
                nl.link_index(&r.bridge)?.ok_or_else(|| {
                    NetworkError::Firewall(format!("bridge {} vanished", r.bridge))
                })?
            }
        };
        nl.add_addr(index, gw, subnet.prefix_len())?;
        nl.set_up(index, None)?;
        // Loopback-published ports are DNAT'ed to the bridge from 127.0.0.1.
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{}/route_localnet", r.bridge),
            "1",
        );
        self.firewall.accept_forward(&r.bridge)?;
        Ok(())
    }

    /// Removes the bridge and its forward rules.
    fn take_down(&self, nl: &mut netlink::Netlink, r: &NetworkRecord) -> Result<(), NetworkError> {
        if !r.is_bridge() {
            return Ok(());
        }
        self.firewall.remove_forward(&r.bridge);
        nl.del_link(&r.bridge)?;
        Ok(())
    }

    /// Rebuilds the nftables table from the networks and the published ports now known, and
    /// removes veths on wharf's bridges that no endpoint owns.
    pub async fn sync(&self, live_veths: &[String]) -> Result<(), NetworkError> {
        let (records, mappings) = {
            let s = self.state();
            let records: Vec<NetworkRecord> = s.nets.values().map(|n| n.rec.clone()).collect();
            let mappings: Vec<PortMapping> = s.mappings.values().flatten().cloned().collect();
            (records, mappings)
        };
        self.firewall.rebuild(&records, &mappings).await?;
        self.state().firewall_ready = true;
        let bridges: Vec<String> = records
            .iter()
            .filter(|r| r.is_bridge())
            .map(|r| r.bridge.clone())
            .collect();
        let live: Vec<String> = live_veths.to_vec();
        tokio::task::spawn_blocking(move || -> Result<(), NetworkError> {
            let mut nl = netlink::Netlink::open()?;
            let links = nl.links()?;
            let ours: Vec<u32> = links
                .iter()
                .filter(|l| bridges.contains(&l.name))
                .map(|l| l.index)
                .collect();
            for l in &links {
                let on_ours = l.master.is_some_and(|m| ours.contains(&m));
                if on_ours && l.name.starts_with(VETH_PREFIX) && !live.contains(&l.name) {
                    tracing::info!(veth = %l.name, "removing a veth no container owns");
                    nl.del_link(&l.name)?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| NetworkError::Firewall(format!("veth cleanup: {e}")))??;
        Ok(())
    }

    /// At daemon stop with nothing running: bridges, rules, table and name servers go.
    pub async fn shutdown(&self) {
        let records: Vec<NetworkRecord> = {
            let mut s = self.state();
            for n in s.nets.values_mut() {
                if let Some(h) = n.dns.take() {
                    h.abort();
                }
            }
            s.nets.values().map(|n| n.rec.clone()).collect()
        };
        if let Ok(mut nl) = netlink::Netlink::open() {
            for r in &records {
                if let Err(e) = self.take_down(&mut nl, r) {
                    tracing::warn!(network = %r.name, error = %e, "removing bridge");
                }
            }
        }
        self.firewall.delete_table().await;
    }

    /// Finds a network by full id, name, then unique id prefix (Docker's order).
    pub fn lookup(&self, key: &str) -> Result<NetworkRecord, NetworkError> {
        let s = self.state();
        lookup_in(&s, key).map(|n| n.rec.clone())
    }

    pub fn records(&self) -> Vec<NetworkRecord> {
        self.state().nets.values().map(|n| n.rec.clone()).collect()
    }
}

pub(crate) fn lookup_in<'a>(s: &'a State, key: &str) -> Result<&'a Net, NetworkError> {
    if let Some(n) = s.nets.get(key) {
        return Ok(n);
    }
    if let Some(n) = s.nets.values().find(|n| n.rec.name == key) {
        return Ok(n);
    }
    let mut found = s.nets.values().filter(|n| n.rec.id.starts_with(key));
    match (found.next(), found.next()) {
        (Some(n), None) if !key.is_empty() => Ok(n),
        (Some(_), Some(_)) => Err(NetworkError::Invalid(format!("network {key} is ambiguous"))),
        _ => Err(NetworkError::NotFound(key.to_string())),
    }
}

/// The prefix of every host-side veth wharf makes.
pub const VETH_PREFIX: &str = "whv";

/// A random locally administered unicast MAC.
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    let _ = getrandom::fill(&mut mac);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn parse_mac(s: &str) -> Result<[u8; 6], NetworkError> {
    let bad = || NetworkError::Invalid(format!("invalid MAC address: {s}"));
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        mac[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 == 1 {
        return Err(bad());
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        let m = random_mac();
        assert_eq!(m[0] & 3, 2);
        let s = format_mac(&m);
        assert_eq!(parse_mac(&s).unwrap(), m);
        assert!(parse_mac("01:00:00:00:00:01").is_err());
        assert!(parse_mac("zz").is_err());
    }

    #[test]
    fn table_follows_bridge() {
        let mut o = NetworkOptions::default();
        assert_eq!(o.table(), "wharf");
        assert_eq!(o.bip.to_string(), "10.89.0.1/24");
        o.bridge = "wt-1".into();
        assert_eq!(o.table(), "wharf-wt-1");
    }
}
