//! IPAM: subnets for new networks out of the daemon's pool, addresses for endpoints out of a
//! network's subnet (or `--ip-range`). Addresses are handed out round-robin, so one just
//! freed is not reused at once.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::{Net, NetworkError};

/// `--default-address-pool base=10.89.0.0/16,size=24`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPool {
    pub base: Ipv4Net,
    pub size: u8,
}

impl AddressPool {
    /// Parses Docker's `base=CIDR,size=N` form.
    pub fn parse(s: &str) -> Result<AddressPool, NetworkError> {
        let mut base = None;
        let mut size = None;
        for kv in s.split(',') {
            match kv.split_once('=') {
                Some(("base", v)) => {
                    base = Some(v.parse::<Ipv4Net>().map_err(|_| {
                        NetworkError::Invalid(format!("invalid address pool base: {v}"))
                    })?)
                }
                Some(("size", v)) => {
                    size = Some(v.parse::<u8>().map_err(|_| {
                        NetworkError::Invalid(format!("invalid address pool size: {v}"))
                    })?)
                }
                _ => return Err(NetworkError::Invalid(format!("invalid address pool: {s}"))),
            }
        }
        let base = base
            .ok_or_else(|| NetworkError::Invalid(format!("address pool without base: {s}")))?
            .trunc();
        let size = size.unwrap_or(24);
        if size < base.prefix_len() || size > 30 {
            return Err(NetworkError::Invalid(format!(
                "invalid address pool size {size} for {base}"
            )));
        }
        Ok(AddressPool { base, size })
    }

    /// The first subnet of the pool that overlaps none of `taken`.
    pub fn next_free(&self, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
        self.base
            .subnets(self.size)
            .ok()?
            .find(|s| !taken.iter().any(|t| overlaps(s, t)))
    }
}

pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The gateway Docker picks: the first host address.
pub fn default_gateway(subnet: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

impl Net {
    /// Reserves `want`, or the next free address; `owner` is the container id.
    pub fn allocate(
        &mut self,
        want: Option<Ipv4Addr>,
        owner: &str,
    ) -> Result<Ipv4Addr, NetworkError> {
        let subnet = self.rec.subnet.ok_or_else(|| {
            NetworkError::Invalid(format!("network {} has no subnet", self.rec.name))
        })?;
        let gateway = self.rec.gateway;
        let usable = |ip: Ipv4Addr| {
            subnet.contains(&ip)
                && ip != subnet.network()
                && ip != subnet.broadcast()
                && Some(ip) != gateway
        };
        if let Some(ip) = want {
            if !usable(ip) {
                return Err(NetworkError::Invalid(format!(
                    "no configured subnet contains IP address {ip}"
                )));
            }
            if let Some(other) = self.used.get(&ip)
                && other != owner
            {
                return Err(NetworkError::Conflict(format!(
                    "Address already in use: {ip}"
                )));
            }
            self.used.insert(ip, owner.to_string());
            return Ok(ip);
        }
        let range = self.rec.ip_range.unwrap_or(subnet);
        let first = u32::from(range.network());
        let count = 1u64 << (32 - u32::from(range.prefix_len()));
        for i in 0..count {
            let off = (u64::from(self.next) + i) % count;
            let ip = Ipv4Addr::from(first + off as u32);
            if usable(ip) && !self.used.contains_key(&ip) {
                self.used.insert(ip, owner.to_string());
                self.next = ((off + 1) % count) as u32;
                return Ok(ip);
            }
        }
        Err(NetworkError::Conflict(format!(
            "no available IPv4 addresses on network {}",
            self.rec.name
        )))
    }

    pub fn release(&mut self, ip: Ipv4Addr, owner: &str) {
        if self.used.get(&ip).is_some_and(|o| o == owner) {
            self.used.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{NetworkRecord, dns};
    use std::collections::HashMap;
    use std::sync::Arc;

    fn net(subnet: &str, range: Option<&str>) -> Net {
        let subnet: Ipv4Net = subnet.parse().unwrap();
        Net {
            rec: NetworkRecord {
                id: "x".into(),
                name: "n".into(),
                driver: "bridge".into(),
                created: String::new(),
                subnet: Some(subnet),
                gateway: Some(default_gateway(&subnet)),
                ip_range: range.map(|r| r.parse().unwrap()),
                internal: false,
                attachable: false,
                labels: HashMap::new(),
                options: HashMap::new(),
                bridge: "b".into(),
                builtin: false,
                user_subnet: true,
            },
            used: HashMap::new(),
            next: 0,
            names: Arc::new(dns::Names::default()),
            dns: None,
        }
    }

    #[test]
    fn addresses_skip_gateway_and_are_not_reused_at_once() {
        let mut n = net("10.9.0.0/29", None);
        let a = n.allocate(None, "a").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 9, 0, 2));
        let b = n.allocate(None, "b").unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 9, 0, 3));
        n.release(a, "a");
        let c = n.allocate(None, "c").unwrap();
        assert_eq!(c, Ipv4Addr::new(10, 9, 0, 4));
        for o in ["d", "e", "f"] {
            n.allocate(None, o).unwrap();
        }
        // .2 was freed; .1 is the gateway, .7 the broadcast.
        assert!(n.allocate(None, "g").is_err());
    }

    #[test]
    fn requested_addresses() {
        let mut n = net("10.9.0.0/24", Some("10.9.0.128/25"));
        assert_eq!(
            n.allocate(Some(Ipv4Addr::new(10, 9, 0, 5)), "a").unwrap(),
            Ipv4Addr::new(10, 9, 0, 5)
        );
        assert!(n.allocate(Some(Ipv4Addr::new(10, 9, 0, 5)), "b").is_err());
        assert!(n.allocate(Some(Ipv4Addr::new(10, 9, 1, 5)), "b").is_err());
        assert!(n.allocate(Some(Ipv4Addr::new(10, 9, 0, 1)), "b").is_err());
        assert_eq!(n.allocate(None, "c").unwrap(), Ipv4Addr::new(10, 9, 0, 128));
    }

    #[test]
    fn pools() {
        let p = AddressPool::parse("base=10.89.0.0/16,size=24").unwrap();
        let taken = vec![
            "10.89.0.0/24".parse().unwrap(),
            "10.89.1.0/25".parse().unwrap(),
        ];
        assert_eq!(p.next_free(&taken).unwrap().to_string(), "10.89.2.0/24");
        assert!(AddressPool::parse("base=10.0.0.0/16,size=8").is_err());
        assert!(AddressPool::parse("size=24").is_err());
    }
}
