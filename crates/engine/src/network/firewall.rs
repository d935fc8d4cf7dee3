//! The firewall: one nftables table per daemon (NAT, published ports, isolation) and, for
//! hosts where Docker set the iptables `FORWARD` policy to DROP, accept rules per bridge.
//!
//! Published ports are elements of four maps (tcp/udp, any host address or one), so a
//! container's ports come and go with one `nft` call and no rule handles to track. The rules
//! that read the maps are fixed; a network adds its own masquerade and isolation rules. The
//! table is always rebuilt whole (one atomic transaction) from what the engine knows, which is
//! how a restarted daemon drops the rules of containers that died while it was away.

use std::borrow::Cow;
use std::process::Stdio;

use nftables::batch::Batch;
use nftables::expr::{CT, Payload, PayloadField, Prefix};
use nftables::expr::{Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression};
use nftables::schema::{Chain, Element, Map, NfListObject, Nftables, Rule, Set};
use nftables::schema::{SetType, SetTypeValue, Table};
use nftables::stmt::{JumpTarget, Match, NAT, NATFamily, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use tokio::io::AsyncWriteExt;

use super::ports::Proto;
use super::{NetworkError, NetworkRecord, PortMapping};

/// The port maps: (name, protocol, keyed by host address too). Each is two maps, to the
/// container's address and to its port: nft 1.0.6 (Debian 12) crashes parsing JSON whose
/// `dnat` reads one map with concatenated data (address . port), which its text syntax takes.
const MAPS: [(&str, &str, bool); 4] = [
    ("tcp_ip", "tcp", true),
    ("tcp_any", "tcp", false),
    ("udp_ip", "udp", true),
    ("udp_any", "udp", false),
];

// Chain priorities by number: the JSON schema has no names for them.
const PRIO_RAW: i32 = -300;
const PRIO_DSTNAT: i32 = -100;
const PRIO_FILTER: i32 = 0;
const PRIO_SRCNAT: i32 = 100;

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

    fn table_obj(&self) -> NfListObject<'static> {
        NfListObject::Table(Table {
            family: NfFamily::IP,
            name: Cow::Owned(self.table.clone()),
            handle: None,
        })
    }

    fn chain(
        &self,
        name: &'static str,
        hook: Option<(NfChainType, NfHook, i32)>,
    ) -> NfListObject<'static> {
        let mut c = Chain {
            family: NfFamily::IP,
            table: Cow::Owned(self.table.clone()),
            name: Cow::Borrowed(name),
            ..Chain::default()
        };
        if let Some((kind, hook, prio)) = hook {
            c._type = Some(kind);
            c.hook = Some(hook);
            c.prio = Some(prio);
            c.policy = Some(NfChainPolicy::Accept);
        }
        NfListObject::Chain(c)
    }

    fn rule(&self, chain: &'static str, expr: Vec<Statement<'static>>) -> NfListObject<'static> {
        NfListObject::Rule(Rule {
            family: NfFamily::IP,
            table: Cow::Owned(self.table.clone()),
            chain: Cow::Borrowed(chain),
            expr: Cow::Owned(expr),
            handle: None,
            index: None,
            comment: None,
        })
    }

    /// The whole table, replacing whatever was there: one transaction for `nft -j -f -`.
    pub fn ruleset(
        &self,
        networks: &[NetworkRecord],
        mappings: &[PortMapping],
    ) -> Nftables<'static> {
        let bridges: Vec<&NetworkRecord> = networks.iter().filter(|n| n.is_bridge()).collect();
        let mut b = Batch::new();
        // Adding first makes the delete succeed whether or not the table existed.
        b.add(self.table_obj());
        b.delete(self.table_obj());
        b.add(self.table_obj());
        let names: Vec<Expression<'static>> = bridges.iter().map(|n| s(&n.bridge)).collect();
        b.add(NfListObject::Set(Box::new(Set {
            family: NfFamily::IP,
            table: Cow::Owned(self.table.clone()),
            name: Cow::Borrowed("bridges"),
            handle: None,
            set_type: SetTypeValue::Single(SetType::Ifname),
            policy: None,
            flags: None,
            elem: (!names.is_empty()).then_some(Cow::Owned(names)),
            timeout: None,
            gc_interval: None,
            size: None,
            comment: None,
        })));
        let addr_port = || {
            SetTypeValue::Concatenated(Cow::Borrowed(&[SetType::Ipv4Addr, SetType::InetService]))
        };
        for (name, _, by_ip) in MAPS {
            for (suffix, data) in [("addr", SetType::Ipv4Addr), ("port", SetType::InetService)] {
                b.add(NfListObject::Map(Box::new(Map {
                    family: NfFamily::IP,
                    table: Cow::Owned(self.table.clone()),
                    name: Cow::Owned(format!("{name}_{suffix}")),
                    set_type: if by_ip {
                        addr_port()
                    } else {
                        SetTypeValue::Single(SetType::InetService)
                    },
                    map: SetTypeValue::Single(data),
                    ..Map::default()
                })));
            }
        }
        b.add(self.chain("ports", None));
        for (name, proto, by_ip) in MAPS {
            let lookup = |suffix: &str| {
                let dport = payload(proto, "dport");
                let key = if by_ip {
                    concat(vec![payload("ip", "daddr"), dport])
                } else {
                    dport
                };
                Expression::Named(NamedExpression::Map(Box::new(nftables::expr::Map {
                    key,
                    data: s(&format!("@{name}_{suffix}")),
                })))
            };
            b.add(self.rule(
                "ports",
                vec![Statement::DNAT(Some(NAT {
                    addr: Some(lookup("addr")),
                    family: Some(NATFamily::IP),
                    port: Some(lookup("port")),
                    flags: None,
                }))],
            ));
        }
        let local = || {
            Statement::Match(Match {
                left: Expression::Named(NamedExpression::Fib(Fib {
                    result: FibResult::Type,
                    flags: [FibFlag::Daddr].into_iter().collect(),
                })),
                right: s("local"),
                op: Operator::EQ,
            })
        };
        let jump_ports = || {
            Statement::Jump(JumpTarget {
                target: Cow::Borrowed("ports"),
            })
        };
        b.add(self.chain(
            "prerouting",
            Some((NfChainType::NAT, NfHook::Prerouting, PRIO_DSTNAT)),
        ));
        b.add(self.rule("prerouting", vec![local(), jump_ports()]));
        b.add(self.chain(
            "output",
            Some((NfChainType::NAT, NfHook::Output, PRIO_DSTNAT)),
        ));
        b.add(self.rule("output", vec![local(), jump_ports()]));
        b.add(self.chain(
            "postrouting",
            Some((NfChainType::NAT, NfHook::Postrouting, PRIO_SRCNAT)),
        ));
        b.add(self.rule(
            "postrouting",
            vec![
                is(payload("ip", "saddr"), loopback()),
                is(meta(MetaKey::Oifname), s("@bridges")),
                Statement::Masquerade(None),
            ],
        ));
        for n in &bridges {
            let Some(subnet) = n.subnet else {
                continue;
            };
            let br = || s(&n.bridge);
            if !n.internal {
                b.add(self.rule(
                    "postrouting",
                    vec![
                        is(
                            payload("ip", "saddr"),
                            prefix(&subnet.network().to_string(), subnet.prefix_len()),
                        ),
                        not(meta(MetaKey::Oifname), br()),
                        Statement::Masquerade(None),
                    ],
                ));
            }
            // Hairpin: a container reaching its own network's published port.
            b.add(self.rule(
                "postrouting",
                vec![
                    is(meta(MetaKey::Iifname), br()),
                    is(meta(MetaKey::Oifname), br()),
                    Statement::Match(Match {
                        left: Expression::Named(NamedExpression::CT(CT {
                            key: Cow::Borrowed("status"),
                            family: None,
                            dir: None,
                        })),
                        right: s("dnat"),
                        op: Operator::IN,
                    }),
                    Statement::Masquerade(None),
                ],
            ));
        }
        b.add(self.chain(
            "forward",
            Some((NfChainType::Filter, NfHook::Forward, PRIO_FILTER)),
        ));
        for n in &bridges {
            let br = || s(&n.bridge);
            if n.internal {
                b.add(self.rule(
                    "forward",
                    vec![
                        is(meta(MetaKey::Iifname), br()),
                        not(meta(MetaKey::Oifname), br()),
                        Statement::Drop(None),
                    ],
                ));
                b.add(self.rule(
                    "forward",
                    vec![
                        is(meta(MetaKey::Oifname), br()),
                        not(meta(MetaKey::Iifname), br()),
                        Statement::Drop(None),
                    ],
                ));
            } else {
                b.add(self.rule(
                    "forward",
                    vec![
                        is(meta(MetaKey::Iifname), br()),
                        not(meta(MetaKey::Oifname), br()),
                        is(meta(MetaKey::Oifname), s("@bridges")),
                        Statement::Drop(None),
                    ],
                ));
            }
        }
        // route_localnet is on for the bridges (loopback-published ports); nothing from a
        // container may reach the host's loopback services through it.
        b.add(self.chain(
            "guard",
            Some((NfChainType::Filter, NfHook::Prerouting, PRIO_RAW)),
        ));
        b.add(self.rule(
            "guard",
            vec![
                is(meta(MetaKey::Iifname), s("@bridges")),
                is(payload("ip", "daddr"), loopback()),
                Statement::Drop(None),
            ],
        ));
        for m in mappings {
            for e in self.elements(m, true) {
                b.add(e);
            }
        }
        b.to_nftables()
    }

    /// A mapping's elements (address map, port map): with their values to add, the keys
    /// alone to delete.
    fn elements(&self, m: &PortMapping, with_value: bool) -> [NfListObject<'static>; 2] {
        let proto = match m.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        let port = Expression::Number(u32::from(m.host_port));
        let (name, key) = if m.host_ip.is_unspecified() {
            (format!("{proto}_any"), port)
        } else {
            (
                format!("{proto}_ip"),
                concat(vec![s(&m.host_ip.to_string()), port]),
            )
        };
        let one = |suffix: &str, value: Expression<'static>| {
            let elem = if with_value {
                Expression::List(vec![key.clone(), value])
            } else {
                key.clone()
            };
            NfListObject::Element(Element {
                family: NfFamily::IP,
                table: Cow::Owned(self.table.clone()),
                name: Cow::Owned(format!("{name}_{suffix}")),
                elem: Cow::Owned(vec![elem]),
            })
        };
        [
            one("addr", s(&m.container_ip.to_string())),
            one("port", Expression::Number(u32::from(m.container_port))),
        ]
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
        let mut b = Batch::new();
        for m in mappings {
            for e in self.elements(m, true) {
                b.add(e);
            }
        }
        nft(&b.to_nftables()).await
    }

    pub async fn remove_ports(&self, mappings: &[PortMapping]) -> Result<(), NetworkError> {
        if mappings.is_empty() {
            return Ok(());
        }
        let mut b = Batch::new();
        for m in mappings {
            for e in self.elements(m, false) {
                b.delete(e);
            }
        }
        nft(&b.to_nftables()).await
    }

    pub async fn delete_table(&self) {
        let mut b = Batch::new();
        b.add(self.table_obj());
        b.delete(self.table_obj());
        if let Err(e) = nft(&b.to_nftables()).await {
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

fn s(v: &str) -> Expression<'static> {
    Expression::String(Cow::Owned(v.to_owned()))
}

fn concat(items: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(items))
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(field),
        },
    )))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn prefix(addr: &str, len: u8) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(addr)),
        len: u32::from(len),
    }))
}

fn loopback() -> Expression<'static> {
    prefix("127.0.0.0", 8)
}

fn is(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

fn not(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::NEQ,
    })
}

/// Applies one batch as one transaction (`nft -j -f -`). Our own spawn rather than the
/// crate's helper: that one blocks the calling thread and panics when serialising fails.
async fn nft(batch: &Nftables<'_>) -> Result<(), NetworkError> {
    let json = serde_json::to_vec(batch)
        .map_err(|e| NetworkError::Firewall(format!("encoding the nftables batch: {e}")))?;
    let mut child = tokio::process::Command::new("nft")
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NetworkError::Command {
            context: "running nft".into(),
            source,
        })?;
    // An nft that exits before reading all of its input closes the pipe: what it said on
    // stderr, read below, is the error worth reporting, not the broken pipe.
    let mut write_error = None;
    if let Some(mut stdin) = child.stdin.take()
        && let Err(e) = stdin.write_all(&json).await
    {
        write_error = Some(e);
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| NetworkError::Command {
            context: "running nft".into(),
            source,
        })?;
    if out.status.success() {
        match write_error {
            None => Ok(()),
            Some(source) => Err(NetworkError::Command {
                context: "writing to nft".into(),
                source,
            }),
        }
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = match stderr.trim() {
            "" => out.status.to_string(),
            s => s.to_owned(),
        };
        Err(NetworkError::Firewall(format!("nft: {why}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
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
        let json = serde_json::to_value(fw.ruleset(&nets, &maps)).unwrap();
        let cmds = json["nftables"].as_array().unwrap();
        let rules: Vec<&serde_json::Value> = cmds
            .iter()
            .filter_map(|c| c["add"].get("rule"))
            .map(|r| &r["expr"])
            .collect();
        let m = |key: &str, op: &str, right: &str| json!({"match": {"left": {"meta": {"key": key}}, "op": op, "right": right}});
        let masq_a = json!([
            {"match": {"left": {"payload": {"protocol": "ip", "field": "saddr"}}, "op": "==",
                "right": {"prefix": {"addr": "10.1.0.0", "len": 24}}}},
            m("oifname", "!=", "br-a"),
            {"masquerade": null}
        ]);
        assert!(rules.contains(&&masq_a), "{rules:#?}");
        assert!(!rules.iter().any(|r| r.to_string().contains("10.2.0.0")));
        let cut_b = json!([m("iifname", "==", "br-b"), m("oifname", "!=", "br-b"), {"drop": null}]);
        assert!(rules.contains(&&cut_b));
        assert_eq!(cmds[0]["add"]["table"]["name"], "wharf-t");
        assert_eq!(cmds[1]["delete"]["table"]["name"], "wharf-t");
        let set = cmds.iter().find_map(|c| c["add"].get("set")).unwrap();
        assert_eq!(set["elem"], json!(["br-a", "br-b"]));
        let n = cmds.len();
        assert_eq!(
            cmds[n - 2]["add"]["element"],
            json!({"family": "ip", "table": "wharf-t", "name": "tcp_ip_addr",
                "elem": [[{"concat": ["127.0.0.1", 8080]}, "10.1.0.2"]]})
        );
        assert_eq!(
            cmds[n - 1]["add"]["element"],
            json!({"family": "ip", "table": "wharf-t", "name": "tcp_ip_port",
                "elem": [[{"concat": ["127.0.0.1", 8080]}, 80]]})
        );
        let [addr, _] = fw.elements(&maps[0], false);
        assert_eq!(
            serde_json::to_value(addr).unwrap(),
            json!({"element": {"family": "ip", "table": "wharf-t", "name": "tcp_ip_addr",
                "elem": [{"concat": ["127.0.0.1", 8080]}]}})
        );
        // The batch is what nft takes: checked (not applied) where nft exists.
        if std::path::Path::new("/usr/sbin/nft").exists() {
            let out = std::process::Command::new("nft")
                .args(["-c", "-j", "-f", "-"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    let batch = serde_json::to_vec(&fw.ruleset(&nets, &maps)).unwrap();
                    c.stdin.take().unwrap().write_all(&batch)?;
                    c.wait_with_output()
                })
                .unwrap();
            assert!(out.status.success(), "nft -c: {out:?}");
        }
    }
}
