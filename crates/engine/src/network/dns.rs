//! The name server of a user network: UDP on the gateway address, port 53. It answers A
//! queries for the containers on the network (name, aliases, short id), answers other query
//! types for those names with no records, and relays every other question to the host's
//! resolvers unchanged.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::UdpSocket;

/// Names on one network: lower-cased name -> (container id, address).
#[derive(Default)]
pub struct Names {
    map: RwLock<HashMap<String, Vec<(String, Ipv4Addr)>>>,
}

impl Names {
    pub fn add(&self, owner: &str, names: &[String], ip: Ipv4Addr) {
        let mut m = self.map.write().unwrap_or_else(|e| e.into_inner());
        for n in names {
            let entry = m.entry(n.to_ascii_lowercase()).or_default();
            if !entry.iter().any(|(o, _)| o == owner) {
                entry.push((owner.to_string(), ip));
            }
        }
    }

    pub fn remove(&self, owner: &str) {
        let mut m = self.map.write().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, v| {
            v.retain(|(o, _)| o != owner);
            !v.is_empty()
        });
    }

    pub fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        let m = self.map.read().unwrap_or_else(|e| e.into_inner());
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        m.get(&name).map(|v| v.iter().map(|(_, ip)| *ip).collect())
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

/// The daemon's own resolvers (it runs in the host's namespace, so loopback ones work).
pub fn host_resolvers() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next())
                .flatten()
                .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

/// Starts answering on `gateway:53`; `None` when the address cannot be bound.
pub fn serve(
    gateway: Ipv4Addr,
    names: Arc<Names>,
    upstream: Vec<SocketAddr>,
) -> Option<tokio::task::AbortHandle> {
    let std_sock = match std::net::UdpSocket::bind((gateway, 53)) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%gateway, error = %e, "network name server not started");
            return None;
        }
    };
    std_sock.set_nonblocking(true).ok()?;
    let sock = Arc::new(UdpSocket::from_std(std_sock).ok()?);
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let query = buf[..n].to_vec();
            match answer(&query, &names) {
                Some(reply) => {
                    let _ = sock.send_to(&reply, from).await;
                }
                None => {
                    let sock = sock.clone();
                    let upstream = upstream.clone();
                    tokio::spawn(async move {
                        if let Some(reply) = relay(&query, &upstream).await {
                            let _ = sock.send_to(&reply, from).await;
                        }
                    });
                }
            }
        }
    });
    Some(task.abort_handle())
}

async fn relay(query: &[u8], upstream: &[SocketAddr]) -> Option<Vec<u8>> {
    for server in upstream {
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let Ok(sock) = UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.send_to(query, server).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf)).await
        {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

/// Parses the question; returns the reply when the name is one of the network's.
pub fn answer(query: &[u8], names: &Names) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let qdcount = u16::from_be_bytes([query[4], query[5]]);
    if qdcount != 1 {
        return None;
    }
    let (name, end) = read_name(query, 12)?;
    if end + 4 > query.len() {
        return None;
    }
    let qtype = u16::from_be_bytes([query[end], query[end + 1]]);
    let qclass = u16::from_be_bytes([query[end + 2], query[end + 3]]);
    if qclass != 1 {
        return None;
    }
    let ips = names.lookup(&name)?;
    let mut reply = Vec::with_capacity(end + 4 + 16 * ips.len());
    reply.extend_from_slice(&query[..2]);
    // QR, opcode 0, AA, RD copied, RA; rcode 0.
    reply.push(0x84 | (query[2] & 0x01));
    reply.push(0x80);
    reply.extend_from_slice(&1u16.to_be_bytes());
    let answers: Vec<Ipv4Addr> = if qtype == 1 || qtype == 255 {
        ips
    } else {
        Vec::new()
    };
    reply.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(&query[12..end + 4]);
    for ip in answers {
        // A pointer to the question's name, type A, class IN, TTL 600, 4 bytes.
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0x02, 0x58, 0, 4]);
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}

fn read_name(buf: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    loop {
        let len = *buf.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        let label = buf.get(at..at + len)?;
        labels.push(String::from_utf8_lossy(label).to_string());
        at += len;
    }
    Some((labels.join("."), at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[test]
    fn answers_known_names_only() {
        let names = Names::default();
        names.add(
            "c1",
            &["web".into(), "Alias".into()],
            Ipv4Addr::new(10, 1, 0, 2),
        );
        let r = answer(&query("WEB", 1), &names).unwrap();
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1);
        assert_eq!(&r[r.len() - 4..], &[10, 1, 0, 2]);
        let r = answer(&query("alias", 28), &names).unwrap();
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 0);
        assert!(answer(&query("other", 1), &names).is_none());
        names.remove("c1");
        assert!(answer(&query("web", 1), &names).is_none());
        assert!(names.is_empty());
        assert!(answer(&[0u8; 5], &names).is_none());
    }
}
