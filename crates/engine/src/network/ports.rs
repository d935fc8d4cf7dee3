//! Published ports: `HostConfig.PortBindings` (and `-P` over the exposed ports) turned into
//! concrete mappings, host ports chosen and checked, and rendered back as Docker shows them.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use wharf_api::models::{self, PortBinding, PortMap};

use super::{NetworkError, PortMapping, State};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// Docker's range for ports it picks.
const EPHEMERAL: std::ops::RangeInclusive<u16> = 49153..=60999;

/// "80/tcp" -> (80, tcp).
pub fn parse_port_key(key: &str) -> Result<(u16, Proto), NetworkError> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let proto = match proto {
        "tcp" | "" => Proto::Tcp,
        "udp" => Proto::Udp,
        other => {
            return Err(NetworkError::Invalid(format!(
                "invalid proto: {other} (tcp and udp are supported)"
            )));
        }
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| NetworkError::Invalid(format!("invalid port: {key}")))?;
    Ok((port, proto))
}

/// A binding as asked: host port `None` means "pick one".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub proto: Proto,
    pub container_port: u16,
    pub host_ip: Ipv4Addr,
    /// An inclusive range; one port when both ends are equal.
    pub host_ports: Option<(u16, u16)>,
}

/// The bindings a container asks for, validated (create refuses bad ones).
pub fn wanted(
    bindings: Option<&PortMap>,
    publish_all: bool,
    exposed: &[String],
) -> Result<Vec<Wanted>, NetworkError> {
    let mut out = Vec::new();
    let mut keys: Vec<(&String, &Option<Vec<PortBinding>>)> =
        bindings.into_iter().flatten().collect();
    keys.sort_by_key(|(k, _)| (*k).clone());
    for (key, list) in keys {
        let (container_port, proto) = parse_port_key(key)?;
        let list = list.clone().unwrap_or_default();
        let list = if list.is_empty() {
            vec![PortBinding::default()]
        } else {
            list
        };
        for b in list {
            let ip = b.host_ip.clone().unwrap_or_default();
            let host_ip = if ip.is_empty() {
                Ipv4Addr::UNSPECIFIED
            } else {
                ip.parse::<Ipv4Addr>().map_err(|_| {
                    NetworkError::Invalid(format!(
                        "invalid host IP for port {key}: {ip} (IPv4 only)"
                    ))
                })?
            };
            let hp = b.host_port.clone().unwrap_or_default();
            let host_ports = if hp.is_empty() || hp == "0" {
                None
            } else {
                let (a, z) = hp.split_once('-').unwrap_or((&hp, &hp));
                let parse = |s: &str| {
                    s.parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| NetworkError::Invalid(format!("invalid host port: {hp}")))
                };
                let (a, z) = (parse(a)?, parse(z)?);
                if z < a {
                    return Err(NetworkError::Invalid(format!("invalid host port: {hp}")));
                }
                Some((a, z))
            };
            out.push(Wanted {
                proto,
                container_port,
                host_ip,
                host_ports,
            });
        }
    }
    if publish_all {
        for key in exposed {
            let (container_port, proto) = parse_port_key(key)?;
            if out
                .iter()
                .any(|w| w.container_port == container_port && w.proto == proto)
            {
                continue;
            }
            out.push(Wanted {
                proto,
                container_port,
                host_ip: Ipv4Addr::UNSPECIFIED,
                host_ports: None,
            });
        }
    }
    Ok(out)
}

/// Whether a host port is free: not published by wharf, and bindable on the host.
fn free(s: &State, proto: Proto, ip: Ipv4Addr, port: u16) -> bool {
    let clash = s.ports.keys().any(|(p, i, n)| {
        *p == proto && *n == port && (*i == ip || i.is_unspecified() || ip.is_unspecified())
    });
    !clash
        && match proto {
            Proto::Tcp => std::net::TcpListener::bind((ip, port)).is_ok(),
            Proto::Udp => std::net::UdpSocket::bind((ip, port)).is_ok(),
        }
}

/// Picks host ports for `wanted`, reserving them for `owner`. All or nothing.
pub(crate) fn reserve(
    s: &mut State,
    owner: &str,
    container_ip: Ipv4Addr,
    wanted: &[Wanted],
) -> Result<Vec<PortMapping>, NetworkError> {
    let mut got: Vec<PortMapping> = Vec::new();
    let result = (|| {
        for w in wanted {
            let candidates: Vec<u16> = match w.host_ports {
                Some((a, z)) => (a..=z).collect(),
                None => {
                    // Start somewhere random so parallel daemons rarely race for one port.
                    let mut b = [0u8; 2];
                    let _ = getrandom::fill(&mut b);
                    let span = u32::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
                    let start = u32::from(u16::from_le_bytes(b)) % span;
                    (0..span)
                        .map(|i| EPHEMERAL.start() + ((start + i) % span) as u16)
                        .collect()
                }
            };
            let port = candidates
                .into_iter()
                .find(|p| free(s, w.proto, w.host_ip, *p))
                .ok_or_else(|| {
                    NetworkError::Conflict(match w.host_ports {
                        Some((a, z)) if a == z => format!(
                            "Bind for {}:{a} failed: port is already allocated",
                            w.host_ip
                        ),
                        _ => format!(
                            "no free host port for {}/{}",
                            w.container_port,
                            w.proto.as_str()
                        ),
                    })
                })?;
            s.ports
                .insert((w.proto, w.host_ip, port), owner.to_string());
            got.push(PortMapping {
                proto: w.proto,
                host_ip: w.host_ip,
                host_port: port,
                container_ip,
                container_port: w.container_port,
            });
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(got),
        Err(e) => {
            for m in &got {
                s.ports.remove(&(m.proto, m.host_ip, m.host_port));
            }
            Err(e)
        }
    }
}

pub(crate) fn release(s: &mut State, owner: &str, mappings: &[PortMapping]) {
    for m in mappings {
        let key = (m.proto, m.host_ip, m.host_port);
        if s.ports.get(&key).is_some_and(|o| o == owner) {
            s.ports.remove(&key);
        }
    }
}

/// `NetworkSettings.Ports`: every exposed port, with its bindings or null.
pub fn port_map(exposed: &[String], mappings: &[PortMapping]) -> PortMap {
    let mut out: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for e in exposed {
        let key = if e.contains('/') {
            e.clone()
        } else {
            format!("{e}/tcp")
        };
        out.entry(key).or_insert(None);
    }
    for m in mappings {
        let key = format!("{}/{}", m.container_port, m.proto.as_str());
        out.entry(key)
            .or_insert(None)
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(m.host_ip.to_string()),
                host_port: Some(m.host_port.to_string()),
            });
    }
    out
}

/// The `Ports` of a container in `ps`.
pub fn summaries(exposed: &[String], mappings: &[PortMapping]) -> Vec<models::PortSummary> {
    let mut out = Vec::new();
    for m in mappings {
        out.push(models::PortSummary {
            ip: Some(m.host_ip.to_string()),
            private_port: m.container_port,
            public_port: Some(m.host_port),
            typ: Some(typ(m.proto)),
        });
    }
    for e in exposed {
        let Ok((port, proto)) = parse_port_key(e) else {
            continue;
        };
        if !mappings
            .iter()
            .any(|m| m.container_port == port && m.proto == proto)
        {
            out.push(models::PortSummary {
                ip: None,
                private_port: port,
                public_port: None,
                typ: Some(typ(proto)),
            });
        }
    }
    out
}

fn typ(p: Proto) -> models::PortSummaryTypeEnum {
    match p {
        Proto::Tcp => models::PortSummaryTypeEnum::TCP,
        Proto::Udp => models::PortSummaryTypeEnum::UDP,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(pairs: &[(&str, &str, &str)]) -> PortMap {
        let mut m: PortMap = HashMap::new();
        for (k, ip, port) in pairs {
            m.entry(k.to_string())
                .or_insert(Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: Some(ip.to_string()),
                    host_port: Some(port.to_string()),
                });
        }
        m
    }

    #[test]
    fn wanted_parses_docker_forms() {
        let m = pm(&[("80/tcp", "", "18080"), ("53/udp", "127.0.0.1", "")]);
        let w = wanted(Some(&m), false, &[]).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].proto, Proto::Udp);
        assert_eq!(w[0].host_ip, Ipv4Addr::LOCALHOST);
        assert_eq!(w[0].host_ports, None);
        assert_eq!(w[1].host_ports, Some((18080, 18080)));
        let all = wanted(None, true, &["80/tcp".into(), "7/udp".into()]).unwrap();
        assert_eq!(all.len(), 2);
        assert!(wanted(Some(&pm(&[("80/sctp", "", "1")])), false, &[]).is_err());
        assert!(wanted(Some(&pm(&[("80/tcp", "::1", "1")])), false, &[]).is_err());
        assert!(wanted(Some(&pm(&[("80/tcp", "", "9-3")])), false, &[]).is_err());
    }

    #[test]
    fn reserve_is_all_or_nothing() {
        let mut s = State::default();
        let ip = Ipv4Addr::new(10, 0, 0, 2);
        let w = |p: Option<(u16, u16)>| Wanted {
            proto: Proto::Tcp,
            container_port: 80,
            host_ip: Ipv4Addr::LOCALHOST,
            host_ports: p,
        };
        let a = reserve(&mut s, "a", ip, &[w(None)]).unwrap();
        let taken = a[0].host_port;
        assert!(EPHEMERAL.contains(&taken));
        let err = reserve(&mut s, "b", ip, &[w(None), w(Some((taken, taken)))]);
        assert!(err.is_err());
        assert_eq!(s.ports.len(), 1);
        release(&mut s, "a", &a);
        assert!(s.ports.is_empty());
    }

    #[test]
    fn port_map_lists_exposed_ports_as_null() {
        let maps = vec![PortMapping {
            proto: Proto::Tcp,
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port: 18080,
            container_ip: Ipv4Addr::new(10, 0, 0, 2),
            container_port: 80,
        }];
        let m = port_map(&["80/tcp".into(), "443/tcp".into()], &maps);
        assert_eq!(m["443/tcp"], None);
        let b = m["80/tcp"].clone().unwrap();
        assert_eq!(b[0].host_ip.as_deref(), Some("0.0.0.0"));
        assert_eq!(b[0].host_port.as_deref(), Some("18080"));
    }
}
