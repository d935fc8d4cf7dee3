//! A small synchronous rtnetlink client: bridges, veth pairs, addresses, routes.
//!
//! Requests go over a `NETLINK_ROUTE` socket that belongs to the network namespace it was
//! opened in; [`Netlink::open_in`] opens one inside a container's namespace from a short-lived
//! thread that joins it, so the daemon's own threads never change namespace.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::Socket;
use netlink_sys::protocols::NETLINK_ROUTE;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket")]
    Socket(#[source] io::Error),
    #[error("entering the network namespace of process {pid}")]
    Enter {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("entering a new network namespace")]
    EnterNew(#[source] io::Error),
    #[error("creating a network namespace")]
    NewNamespace(#[source] io::Error),
    #[error("{what}")]
    Request {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("undecodable netlink reply: {0}")]
    Decode(String),
}

impl NetlinkError {
    /// The errno the kernel answered with, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A link as a dump reports it.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    /// The index of the bridge it is a port of.
    pub master: Option<u32>,
}

/// The network namespace a veth's peer end is created in.
#[derive(Clone, Copy)]
pub enum PeerNamespace<'a> {
    /// The namespace of a process.
    Pid(u32),
    /// A namespace held by a handle (from [`new_namespace`]).
    Handle(&'a File),
}

/// A new, empty network namespace, alive as long as the returned handle (or a process in it).
/// Made on a thread of its own, which ends right after: unshare moves only the calling thread.
pub fn new_namespace() -> Result<File, NetlinkError> {
    std::thread::spawn(unshare_namespace)
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
        .map_err(NetlinkError::NewNamespace)
}

/// Moves the calling thread into a new network namespace and returns a handle to it.
fn unshare_namespace() -> io::Result<File> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    File::open("/proc/thread-self/ns/net")
}

/// A few empty network namespaces made ahead: making one (~0.7 ms here) is then off every
/// start's path. Refilled on a thread of its own after each take; a namespace nobody took
/// goes with the daemon.
#[derive(Default)]
pub struct NamespacePool {
    spare: std::sync::Mutex<Vec<File>>,
    filling: std::sync::atomic::AtomicBool,
}

impl NamespacePool {
    const SPARE: usize = 2;

    /// A namespace no process has entered.
    pub fn take(self: &Arc<Self>) -> Result<File, NetlinkError> {
        let spare = self.spare().pop();
        self.refill();
        match spare {
            Some(ns) => Ok(ns),
            None => new_namespace(),
        }
    }

    fn spare(&self) -> std::sync::MutexGuard<'_, Vec<File>> {
        self.spare.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refill(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.clone();
        // Each unshare leaves this thread in the namespace just made; the thread ends when
        // the pool is full, and with it its hold on the last one (the handle keeps it).
        std::thread::spawn(move || {
            while pool.spare().len() < Self::SPARE {
                match unshare_namespace() {
                    Ok(ns) => pool.spare().push(ns),
                    Err(_) => break,
                }
            }
            pool.filling.store(false, Ordering::Release);
        });
    }
}

pub struct Netlink {
    sock: Socket,
    seq: u32,
}

impl Netlink {
    /// A socket in the caller's network namespace.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        sock.bind_auto().map_err(NetlinkError::Socket)?;
        Ok(Netlink { sock, seq: 0 })
    }

    /// A socket in the network namespace of process `pid`.
    pub fn open_in(pid: u32) -> Result<Netlink, NetlinkError> {
        let path = format!("/proc/{pid}/ns/net");
        let enter = move |source| NetlinkError::Enter { pid, source };
        let ns = std::fs::File::open(&path).map_err(enter)?;
        Netlink::open_in_ns(Arc::new(ns), enter)
    }

    /// A socket in the network namespace `ns` (a handle from [`new_namespace`]).
    pub fn open_in_namespace(ns: Arc<File>) -> Result<Netlink, NetlinkError> {
        Netlink::open_in_ns(ns, NetlinkError::EnterNew)
    }

    fn open_in_ns(
        ns: Arc<File>,
        enter: impl Fn(io::Error) -> NetlinkError + Send + 'static,
    ) -> Result<Netlink, NetlinkError> {
        // The thread that joins the namespace ends right after opening the socket, which stays
        // in that namespace.
        std::thread::spawn(move || {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| enter(io::Error::from(e)))?;
            Netlink::open()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(NetlinkError::Socket(io::Error::other(
                "namespace thread panicked",
            )))
        })
    }

    /// Sends one request and collects the replies up to its acknowledgement (or the end of a
    /// dump).
    fn request(
        &mut self,
        what: impl Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.sock
            .send(&buf, 0)
            .map_err(|source| NetlinkError::Request {
                what: what(),
                source,
            })?;
        let mut out = Vec::new();
        let mut rx = Vec::with_capacity(64 * 1024);
        loop {
            rx.clear();
            let n = self
                .sock
                .recv(&mut rx, 0)
                .map_err(|source| NetlinkError::Request {
                    what: what(),
                    source,
                })?;
            let mut off = 0;
            while off < n {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[off..n])
                    .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number != self.seq {
                    off += len.max(1);
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(_) => Err(NetlinkError::Request {
                                what: what(),
                                source: e.to_io(),
                            }),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }

    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let replies = self.request(
            || "listing links".into(),
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for m in replies {
            let RouteNetlinkMessage::NewLink(l) = m else {
                continue;
            };
            let mut link = Link {
                index: l.header.index,
                name: String::new(),
                kind: None,
                master: None,
            };
            for a in l.attributes {
                match a {
                    LinkAttribute::IfName(n) => link.name = n,
                    LinkAttribute::Controller(m) => link.master = Some(m),
                    LinkAttribute::LinkInfo(infos) => {
                        for i in infos {
                            if let LinkInfo::Kind(k) = i {
                                link.kind = Some(k.to_string());
                            }
                        }
                    }
                    _ => {}
                }
            }
            out.push(link);
        }
        Ok(out)
    }

    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(
            || format!("looking up link {name}"),
            RouteNetlinkMessage::GetLink(msg),
            NLM_F_ACK,
        ) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a bridge (with a fixed MAC, so it does not change as ports come and go).
    pub fn add_bridge(&mut self, name: &str, mac: [u8; 6], mtu: u32) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        if mtu > 0 {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.request(
            || format!("creating bridge {name}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Creates a veth pair whose `peer` end goes straight into the network namespace
    /// `peer_ns`, named `peer_name` there.
    pub fn add_veth(
        &mut self,
        host: &str,
        peer_name: &str,
        peer_ns: PeerNamespace<'_>,
        peer_mac: Option<[u8; 6]>,
        mtu: u32,
    ) -> Result<(), NetlinkError> {
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(peer_name.to_string()));
        peer.attributes.push(match peer_ns {
            PeerNamespace::Pid(pid) => LinkAttribute::NetNsPid(pid),
            PeerNamespace::Handle(ns) => LinkAttribute::NetNsFd(ns.as_raw_fd()),
        });
        if let Some(mac) = peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(host.to_string()));
        if mtu > 0 {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.request(
            || format!("creating veth {host}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Sets a link up, optionally making it a port of bridge `master` in the same request.
    pub fn set_up(&mut self, index: u32, master: Option<u32>) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        if let Some(m) = master {
            msg.attributes.push(LinkAttribute::Controller(m));
        }
        self.request(
            || format!("setting link {index} up"),
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_ACK,
        )
        .map(drop)
    }

    /// Deletes a link by name; a link that is already gone is not an error.
    pub fn del_link(&mut self, name: &str) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(
            || format!("deleting link {name}"),
            RouteNetlinkMessage::DelLink(msg),
            NLM_F_ACK,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Adds an IPv4 address; one that is already there is not an error.
    pub fn add_addr(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<(), NetlinkError> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(ip.into()));
        msg.attributes.push(AddressAttribute::Address(ip.into()));
        let bits = u32::from(ip) | (u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0));
        if prefix < 31 {
            msg.attributes
                .push(AddressAttribute::Broadcast(Ipv4Addr::from(bits)));
        }
        match self.request(
            || format!("adding address {ip}/{prefix}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Adds the default route through `gateway`.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> Result<(), NetlinkError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        self.request(
            || format!("adding the default route via {gateway}"),
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// The IPv4 destinations of the main routing table (to keep new subnets off them).
    pub fn route_destinations(&mut self) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        let replies = self.request(
            || "listing routes".into(),
            RouteNetlinkMessage::GetRoute(msg),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for m in replies {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            if r.header.table != RouteHeader::RT_TABLE_MAIN
                || r.header.destination_prefix_length == 0
            {
                continue;
            }
            for a in &r.attributes {
                if let RouteAttribute::Destination(RouteAddress::Inet(d)) = a {
                    out.push((*d, r.header.destination_prefix_length));
                }
            }
        }
        Ok(out)
    }
}
