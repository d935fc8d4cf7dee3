//! The firewall: one nftables table per daemon (NAT, published ports, isolation) and, for
//! hosts where Docker set the iptables `FORWARD` policy to DROP, accept rules per bridge.
//!
//! Published ports are elements of four maps (tcp/udp, any host address or one), so a
//! container's ports come and go with one `nft` call and no rule handles to track. The rules
//! that read the maps are fixed; a network adds its own masquerade and isolation rules. The
//! table is always rebuilt whole (one atomic transaction) from what the engine knows, which is
//! how a restarted daemon drops the rules of containers that died while it was away.

use std::fmt::Write as _;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::ports::Proto;
use super::{NetworkError, NetworkRecord, PortMapping};

pub struct Firewall {
    table: String,
}

impl Firewall {
    pub fn new(table: String) -> Firewall {
        Firewall { table }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn enable_forwarding(&self) {
        if std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() != "1")
            && let Err(e) = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        {
            tracing::warn!(error = %e, "enabling ip_forward");
        }
    }

    /// The whole table, replacing whatever was there.
    pub fn ruleset(&self, networks: &[NetworkRecord], mappings: &[PortMapping]) -> String {
        let t = &self.table;
        let bridges: Vec<&NetworkRecord> = networks.iter().filter(|n| n.is_bridge()).collect();
        let mut s = String::new();
        let _ = writeln!(s, "table ip {t}\ndelete table ip {t}\ntable ip {t} {{");
        let names: Vec<String> = bridges
            .iter()
            .map(|n| format!("\"{}\"", n.bridge))
            .collect();
        let _ = writeln!(s, "  set bridges {{ type ifname;");
        if !names.is_empty() {
            let _ = writeln!(s, "    elements = {{ {} }}", names.join(", "));
        }
        let _ = writeln!(s, "  }}");
        for p in ["tcp", "udp"] {
            let _ = writeln!(
                s,
                "  map {p}_any {{ type inet_service : ipv4_addr . inet_service; }}\n  map {p}_ip {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; }}"
            );
        }
        s.push_str(
            "  chain ports {\n    dnat ip to ip daddr . tcp dport map @tcp_ip\n    dnat ip to tcp dport map @tcp_any\n    dnat ip to ip daddr . udp dport map @udp_ip\n    dnat ip to udp dport map @udp_any\n  }\n",
        );
        s.push_str("  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    fib daddr type local jump ports\n  }\n");
        s.push_str("  chain output {\n    type nat hook output priority -100; policy accept;\n    fib daddr type local jump ports\n  }\n");
        s.push_str("  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr 127.0.0.0/8 oifname @bridges masquerade\n");
        for n in &bridges {
            let (Some(subnet), b) = (n.subnet, &n.bridge) else {
                continue;
            };
            if !n.internal {
                let _ = writeln!(s, "    ip saddr {subnet} oifname != \"{b}\" masquerade");
            }
            let _ = writeln!(
                s,
                "    iifname \"{b}\" oifname \"{b}\" ct status dnat masquerade"
            );
        }
        s.push_str("  }\n");
        s.push_str(
            "  chain forward {\n    type filter hook forward priority filter; policy accept;\n",
        );
        for n in &bridges {
            let b = &n.bridge;
            if n.internal {
                let _ = writeln!(s, "    iifname \"{b}\" oifname != \"{b}\" drop");
                let _ = writeln!(s, "    oifname \"{b}\" iifname != \"{b}\" drop");
            } else {
                let _ = writeln!(
                    s,
                    "    iifname \"{b}\" oifname != \"{b}\" oifname @bridges drop"
                );
            }
        }
        s.push_str("  }\n");
        // route_localnet is on for the bridges (loopback-published ports); nothing from a
        // container may reach the host's loopback services through it.
        s.push_str("  chain guard {\n    type filter hook prerouting priority raw; policy accept;\n    iifname @bridges ip daddr 127.0.0.0/8 drop\n  }\n}\n");
        for m in mappings {
            s.push_str(&self.element("add", m));
        }
        s
    }

    fn element(&self, verb: &str, m: &PortMapping) -> String {
        let proto = match m.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        let key = if m.host_ip.is_unspecified() {
            format!("{proto}_any {{ {}", m.host_port)
        } else {
            format!("{proto}_ip {{ {} . {}", m.host_ip, m.host_port)
        };
        if verb == "delete" {
            format!("delete element ip {} {key} }}\n", self.table)
        } else {
            format!(
                "add element ip {} {key} : {} . {} }}\n",
                self.table, m.container_ip, m.container_port
            )
        }
    }

    pub async fn rebuild(
        &self,
        networks: &[NetworkRecord],
        mappings: &[PortMapping],
    ) -> Result<(), NetworkError> {
        nft(&self.ruleset(networks, mappings)).await
    }

    pub async fn add_ports(&self, mappings: &[PortMapping]) -> Result<(), NetworkError> {
        if mappings.is_empty() {
            return Ok(());
        }
        let script: String = mappings.iter().map(|m| self.element("add", m)).collect();
        nft(&script).await
    }

    pub async fn remove_ports(&self, mappings: &[PortMapping]) -> Result<(), NetworkError> {
        if mappings.is_empty() {
            return Ok(());
        }
        let script: String = mappings.iter().map(|m| self.element("delete", m)).collect();
        nft(&script).await
    }

    pub async fn delete_table(&self) {
        let t = &self.table;
        if let Err(e) = nft(&format!("table ip {t}\ndelete table ip {t}\n")).await {
            tracing::warn!(error = %e, "deleting the nftables table");
        }
    }

    /// Accept rules for `bridge` at the top of iptables' `FORWARD` (where Docker's DROP policy
    /// would otherwise drop what the bridge forwards).
    pub fn accept_forward(&self, bridge: &str) -> Result<(), NetworkError> {
        for dir in ["-i", "-o"] {
            let rule = ["FORWARD", dir, bridge, "-j", "ACCEPT"];
            if iptables("-C", &rule).is_ok() {
                continue;
            }
            iptables("-I", &rule)?;
        }
        Ok(())
    }

    pub fn remove_forward(&self, bridge: &str) {
        for dir in ["-i", "-o"] {
            let rule = ["FORWARD", dir, bridge, "-j", "ACCEPT"];
            while iptables("-D", &rule).is_ok() {}
        }
    }
}

fn iptables(op: &str, rule: &[&str]) -> Result<(), NetworkError> {
    let out = std::process::Command::new("iptables")
        .args(["-w", op])
        .args(rule)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetworkError::Command {
            context: "running iptables".into(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Firewall(format!(
            "iptables {op} {}: {}",
            rule.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Runs one nft script as one transaction.
async fn nft(script: &str) -> Result<(), NetworkError> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NetworkError::Command {
            context: "running nft".into(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|source| NetworkError::Command {
                context: "writing to nft".into(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| NetworkError::Command {
            context: "running nft".into(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Firewall(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    #[test]
    fn ruleset_has_nat_isolation_and_ports() {
        let fw = Firewall::new("wharf-t".into());
        let net = |name: &str, bridge: &str, subnet: &str, internal: bool| NetworkRecord {
            id: name.into(),
            name: name.into(),
            driver: "bridge".into(),
            created: String::new(),
            subnet: Some(subnet.parse().unwrap()),
            gateway: None,
            ip_range: None,
            internal,
            attachable: false,
            labels: HashMap::new(),
            options: HashMap::new(),
            bridge: bridge.into(),
            builtin: false,
            user_subnet: false,
        };
        let nets = vec![
            net("a", "br-a", "10.1.0.0/24", false),
            net("b", "br-b", "10.2.0.0/24", true),
        ];
        let maps = vec![PortMapping {
            proto: Proto::Tcp,
            host_ip: Ipv4Addr::LOCALHOST,
            host_port: 8080,
            container_ip: Ipv4Addr::new(10, 1, 0, 2),
            container_port: 80,
        }];
        let s = fw.ruleset(&nets, &maps);
        assert!(s.contains("ip saddr 10.1.0.0/24 oifname != \"br-a\" masquerade"));
        assert!(!s.contains("ip saddr 10.2.0.0/24"));
        assert!(s.contains("iifname \"br-b\" oifname != \"br-b\" drop"));
        assert!(s.contains("elements = { \"br-a\", \"br-b\" }"));
        assert!(
            s.ends_with("add element ip wharf-t tcp_ip { 127.0.0.1 . 8080 : 10.1.0.2 . 80 }\n")
        );
        assert_eq!(
            fw.element("delete", &maps[0]),
            "delete element ip wharf-t tcp_ip { 127.0.0.1 . 8080 }\n"
        );
    }
}
