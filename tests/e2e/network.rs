//! Networking: the default bridge with NAT and published ports, user networks with name
//! resolution, the network modes, docker's network verbs, and nothing left behind.
//! Traffic goes only to loopback, this host's own address and the tests' containers.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{DOCKER28, Daemon, ok, stderr, stdout};

/// A directory with an index.html for busybox httpd; removed on drop.
struct Www(std::path::PathBuf);

impl Www {
    fn new(text: &str) -> Www {
        let dir = crate::harness::unique_dir("wharf-test-www");
        std::fs::write(dir.join("index.html"), text).unwrap();
        Www(dir)
    }
    fn bind(&self) -> String {
        format!("{}:/www:ro", self.0.display())
    }
}

impl Drop for Www {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// GET / over HTTP/1.0; the body, or the error. Retries while the server comes up.
fn http_get(ip: Ipv4Addr, port: u16) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })();
        match attempt {
            Ok(body) if !body.is_empty() => return Ok(body),
            Ok(_) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Ok(_) => return Err("empty answer".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The first global IPv4 address of this host (not loopback, not a wharf bridge).
fn host_address() -> Option<Ipv4Addr> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        let dev = words.get(1)?;
        if dev.starts_with("wt") || dev.starts_with("wh") || dev.starts_with("docker") {
            return None;
        }
        words.get(3)?.split('/').next()?.parse().ok()
    })
}

fn links() -> String {
    let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Veths on `bridge`, by polling (the kernel removes them asynchronously).
fn veths_on(bridge: &str) -> usize {
    links()
        .lines()
        .filter(|l| l.contains(&format!("master {bridge} ")))
        .count()
}

fn wait_no_veths(bridge: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = veths_on(bridge);
        if n == 0 || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn nft_table(d: &Daemon) -> Option<String> {
    let out = Command::new("nft")
        .args(["list", "table", "ip", &format!("wharf-{}", d.bridge)])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

/// Published-port map elements in a listed table ("80 : 10.1.0.2 . 80").
fn port_elements(table: &str) -> usize {
    table
        .lines()
        .filter(|l| l.contains(" : ") && !l.contains("type "))
        .count()
}

fn iptables_rules(bridge: &str) -> usize {
    let out = Command::new("iptables")
        .args(["-w", "-S", "FORWARD"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == bridge))
        .count()
}

#[test]
fn published_ports_default_bridge_and_port_verb() {
    let d = Daemon::with_busybox();
    let www = Www::new("hello from wharf\n");
    let id = ok(d.wharf(&[
        "run",
        "-d",
        "-p",
        "18080:80",
        "-p",
        "127.0.0.1::80",
        "-v",
        &www.bind(),
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]));
    let body = http_get(Ipv4Addr::LOCALHOST, 18080).unwrap();
    assert!(body.contains("hello from wharf"), "{body}");
    if let Some(ip) = host_address() {
        let body = http_get(ip, 18080).unwrap();
        assert!(body.contains("hello from wharf"), "via {ip}: {body}");
    }
    // A non-loopback address of this host that exists on every machine: the daemon's own
    // bridge gateway.
    let gw: Ipv4Addr = d.bip.split('/').next().unwrap().parse().unwrap();
    let body = http_get(gw, 18080).unwrap();
    assert!(body.contains("hello from wharf"), "via {gw}: {body}");

    // The random port, as `wharf port` and `docker port` report it.
    let port = ok(d.wharf(&["port", &id, "80/tcp"]));
    let lines: Vec<&str> = port.lines().collect();
    assert!(lines.contains(&"0.0.0.0:18080"), "{port}");
    let random = lines
        .iter()
        .find_map(|l| l.strip_prefix("127.0.0.1:"))
        .expect("a loopback binding")
        .parse::<u16>()
        .unwrap();
    assert!(random >= 49153, "{random}");
    let body = http_get(Ipv4Addr::LOCALHOST, random).unwrap();
    assert!(body.contains("hello from wharf"), "{body}");
    if std::path::Path::new(DOCKER28).exists() {
        let theirs = ok(d.docker(DOCKER28, &["port", &id]));
        assert!(
            theirs.contains(&format!("80/tcp -> 127.0.0.1:{random}")),
            "{theirs}"
        );
        assert!(theirs.contains("80/tcp -> 0.0.0.0:18080"), "{theirs}");
    }
    let ports = ok(d.wharf(&["inspect", "-f", "{{json .NetworkSettings.Ports}}", &id]));
    let v: serde_json::Value = serde_json::from_str(&ports).unwrap();
    let bindings = v["80/tcp"].as_array().unwrap();
    assert_eq!(bindings.len(), 2, "{ports}");
    assert!(
        bindings
            .iter()
            .any(|b| b["HostIp"] == "0.0.0.0" && b["HostPort"] == "18080")
    );
    let pb = ok(d.wharf(&["inspect", "-f", "{{json .HostConfig.PortBindings}}", &id]));
    assert!(pb.contains("\"HostPort\":\"18080\""), "{pb}");
    // A second container cannot take the same host port.
    let clash = d.wharf(&["run", "--rm", "-p", "18080:80", "busybox", "true"]);
    assert!(!clash.status.success());
    assert!(
        stderr(&clash).contains("already allocated"),
        "{}",
        stderr(&clash)
    );

    // The container reaches the outside through NAT: here, the host's own address, and
    // resolv.conf carries no loopback resolver.
    let resolv = ok(d.wharf(&["exec", &id, "cat", "/etc/resolv.conf"]));
    assert!(!resolv.contains("nameserver 127."), "{resolv}");
    let route = ok(d.wharf(&["exec", &id, "ip", "route"]));
    assert!(route.contains(&format!("default via {gw}")), "{route}");

    ok(d.wharf(&["rm", "-f", &id]));
    assert!(http_get(Ipv4Addr::LOCALHOST, 18080).is_err());
    let table = nft_table(&d).unwrap();
    assert_eq!(port_elements(&table), 0, "port elements remain:\n{table}");
    assert_eq!(wait_no_veths(&d.bridge), 0);
}

#[test]
fn published_udp_port_echoes() {
    let d = Daemon::with_busybox();
    // busybox has no UDP server: the host's python3, its files mounted read-only.
    let id = ok(d.wharf(&[
        "run", "-d", "-p", "127.0.0.1:18053:5353/udp", "-v", "/usr:/usr:ro", "-v",
        "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro", "busybox", "/usr/bin/python3", "-c",
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',5353))\nwhile True:\n    d,a=s.recvfrom(100); s.sendto(d,a)",
    ]));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 64];
    let got = loop {
        sock.send_to(b"ping", "127.0.0.1:18053").unwrap();
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            break buf[..n].to_vec();
        }
        assert!(Instant::now() < deadline, "no echo: {}", d.daemon_log());
    };
    assert_eq!(got, b"ping");
    ok(d.wharf(&["rm", "-f", &id]));
}

#[test]
fn user_network_resolves_names_aliases_and_short_ids() {
    let d = Daemon::with_busybox();
    let www = Www::new("by name\n");
    ok(d.wharf(&["network", "create", "appnet"]));
    let web = ok(d.wharf(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "appnet",
        "--network-alias",
        "site",
        "-v",
        &www.bind(),
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]));
    let short = &web[..12];
    // Wait for httpd by address first.
    let ip = ok(d.wharf(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.appnet.IPAddress}}",
        &web,
    ]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d
        .wharf(&[
            "run",
            "--rm",
            "--network",
            "appnet",
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{ip}/"),
        ])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "httpd on {ip} did not come up");
    }
    for name in ["web", "site", short] {
        let out = d.wharf(&[
            "run",
            "--rm",
            "--network",
            "appnet",
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{name}/"),
        ]);
        assert_eq!(stdout(&out), "by name\n", "{name}: {}", stderr(&out));
    }
    let resolv = ok(d.wharf(&[
        "run",
        "--rm",
        "--network",
        "appnet",
        "busybox",
        "cat",
        "/etc/resolv.conf",
    ]));
    assert!(resolv.contains("nameserver "), "{resolv}");
    let inspect = ok(d.wharf(&["network", "inspect", "-f", "{{json .Containers}}", "appnet"]));
    assert!(inspect.contains(&web), "{inspect}");

    // The default bridge has no name resolution: the name is not in the container's hosts
    // and no name server of wharf answers there (the host resolver is never asked: the
    // lookup goes to /etc/hosts only).
    let web2 = ok(d.wharf(&["run", "-d", "--name", "web2", "busybox", "sleep", "100"]));
    let hosts = ok(d.wharf(&["run", "--rm", "busybox", "cat", "/etc/hosts"]));
    assert!(!hosts.contains("web2"), "{hosts}");
    let resolv = ok(d.wharf(&["run", "--rm", "busybox", "cat", "/etc/resolv.conf"]));
    let gw = d.bip.split('/').next().unwrap();
    assert!(!resolv.contains(gw), "{resolv}");
    ok(d.wharf(&["rm", "-f", &web, &web2]));
    let busy = d.wharf(&["network", "rm", "bridge"]);
    assert!(!busy.status.success());
    ok(d.wharf(&["network", "rm", "appnet"]));
    assert!(!ok(d.wharf(&["network", "ls"])).contains("appnet"));
}

#[test]
fn network_modes() {
    let d = Daemon::with_busybox();
    let none = ok(d.wharf(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "ls",
        "/sys/class/net",
    ]));
    assert_eq!(none.split_whitespace().collect::<Vec<_>>(), vec!["lo"]);

    let host = ok(d.wharf(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox",
        // Parallel tests add and remove host veths: one may vanish between ls's readdir and
        // its stat, which is not what this checks.
        "sh",
        "-c",
        "ls -1 /sys/class/net 2>/dev/null; true",
    ]));
    let ours: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        host.split_whitespace()
            .any(|i| i != "lo" && ours.iter().any(|o| o == i)),
        "{host}"
    );

    let bridged = ok(d.wharf(&["run", "--rm", "busybox", "ls", "/sys/class/net"]));
    assert_eq!(
        bridged.split_whitespace().collect::<Vec<_>>(),
        vec!["eth0", "lo"]
    );

    let owner = ok(d.wharf(&["run", "-d", "busybox", "sleep", "100"]));
    let theirs = ok(d.wharf(&["exec", &owner, "readlink", "/proc/self/ns/net"]));
    let joined = ok(d.wharf(&[
        "run",
        "--rm",
        "--network",
        &format!("container:{owner}"),
        "busybox",
        "readlink",
        "/proc/self/ns/net",
    ]));
    assert_eq!(theirs, joined);

    ok(d.wharf(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        &internal_subnet(&d),
        "closed",
    ]));
    let route = ok(d.wharf(&[
        "run",
        "--rm",
        "--network",
        "closed",
        "busybox",
        "ip",
        "route",
    ]));
    assert!(!route.contains("default"), "{route}");
    assert!(route.contains("eth0"), "{route}");
    let bad = d.wharf(&[
        "network",
        "create",
        "--subnet",
        &internal_subnet(&d),
        "overlap",
    ]);
    assert!(!bad.status.success(), "overlapping subnet accepted");
    let bad = d.wharf(&["run", "--rm", "--network", "nosuchnet", "busybox", "true"]);
    assert_eq!(bad.status.code(), Some(125), "{}", stderr(&bad));
    ok(d.wharf(&["rm", "-f", &owner]));
    ok(d.wharf(&["network", "rm", "closed"]));
}

/// A /28 out of the daemon's pool (its last one), for tests that pass `--subnet`.
fn internal_subnet(d: &Daemon) -> String {
    let base = d
        .pool
        .strip_prefix("base=")
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let ip: Ipv4Addr = base.parse().unwrap();
    let o = ip.octets();
    format!("{}.{}.{}.{}/28", o[0], o[1], o[2], o[3] + 112)
}

#[test]
fn docker_cli_network_verbs() {
    if !std::path::Path::new(DOCKER28).exists() {
        eprintln!("skipping: {DOCKER28} is not installed");
        return;
    }
    let d = Daemon::with_busybox();
    let docker = |args: &[&str]| d.docker(DOCKER28, args);
    let id = ok(docker(&[
        "network", "create", "--label", "team=net", "dnet",
    ]));
    assert_eq!(id.len(), 64);
    let ls = ok(docker(&["network", "ls"]));
    for n in ["bridge", "host", "none", "dnet"] {
        assert!(ls.contains(n), "{ls}");
    }
    assert!(ls.starts_with("NETWORK ID"), "{ls}");
    let filtered = ok(docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        "label=team=net",
    ]));
    assert_eq!(filtered, &id[..12]);
    assert_eq!(
        ok(docker(&[
            "network",
            "inspect",
            "-f",
            "{{.Driver}} {{.Scope}}",
            "dnet"
        ])),
        "bridge local"
    );
    let c = ok(docker(&[
        "run", "-d", "--name", "c1", "busybox", "sleep", "100",
    ]));
    ok(docker(&[
        "network", "connect", "--alias", "one", "dnet", "c1",
    ]));
    let ifs = ok(docker(&["exec", "c1", "ls", "/sys/class/net"]));
    assert_eq!(
        ifs.split_whitespace().collect::<Vec<_>>(),
        vec!["eth0", "eth1", "lo"]
    );
    let nets = ok(docker(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        "c1",
    ]));
    assert!(nets.contains("bridge") && nets.contains("dnet"), "{nets}");
    let busy = docker(&["network", "rm", "dnet"]);
    assert!(!busy.status.success(), "removed a network in use");
    ok(docker(&["network", "disconnect", "dnet", "c1"]));
    let ifs = ok(docker(&["exec", "c1", "ls", "/sys/class/net"]));
    assert_eq!(
        ifs.split_whitespace().collect::<Vec<_>>(),
        vec!["eth0", "lo"]
    );
    let p = ok(docker(&[
        "run",
        "-d",
        "-p",
        "127.0.0.1::80",
        "busybox",
        "sleep",
        "100",
    ]));
    let port = ok(docker(&["port", &p, "80"]));
    assert!(port.starts_with("127.0.0.1:"), "{port}");
    ok(docker(&["rm", "-f", &c, &p]));
    ok(docker(&["network", "rm", "dnet"]));
    let gone = docker(&["network", "inspect", "dnet"]);
    assert!(!gone.status.success());
    ok(docker(&["network", "create", "dnet2"]));
    let pruned = ok(docker(&["network", "prune", "-f"]));
    assert!(pruned.contains("dnet2"), "{pruned}");
}

#[test]
fn run_rm_cycles_and_daemon_kill_leave_nothing() {
    let mut d = Daemon::with_busybox();
    ok(d.wharf(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.name=wt-cyc",
        "cyc",
    ]));
    let bridge_rules = iptables_rules("wt-cyc");
    assert_eq!(bridge_rules, 2);
    for i in 0..200 {
        let out = d.wharf(&[
            "run",
            "--rm",
            "--network",
            "cyc",
            "-p",
            "127.0.0.1::80",
            "busybox",
            "true",
        ]);
        assert!(out.status.success(), "cycle {i}: {}", stderr(&out));
    }
    // One survives the daemon's kill -9; one dies while the daemon is away.
    let keep = ok(d.wharf(&[
        "run",
        "-d",
        "--network",
        "cyc",
        "-p",
        "127.0.0.1:18081:80",
        "busybox",
        "sleep",
        "1000",
    ]));
    let dies = ok(d.wharf(&[
        "run",
        "-d",
        "--network",
        "cyc",
        "-p",
        "127.0.0.1:18082:80",
        "busybox",
        "sleep",
        "1000",
    ]));
    let dies_pid = ok(d.wharf(&["inspect", "-f", "{{.State.Pid}}", &dies]));
    d.kill9();
    let _ = Command::new("kill").args(["-9", &dies_pid]).status();
    d.spawn();
    let table = nft_table(&d).unwrap();
    assert!(table.contains("18081"), "{table}");
    assert!(
        !table.contains("18082"),
        "a dead container's port survived:\n{table}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while veths_on("wt-cyc") != 1 {
        assert!(Instant::now() < deadline, "veths: {}", links());
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(d.wharf(&["rm", "-f", &keep, &dies]));
    assert_eq!(wait_no_veths("wt-cyc"), 0, "{}", links());
    let table = nft_table(&d).unwrap();
    assert_eq!(port_elements(&table), 0, "{table}");
    assert_eq!(iptables_rules("wt-cyc"), 2);
    let inspect = ok(d.wharf(&["network", "inspect", "-f", "{{len .Containers}}", "cyc"]));
    assert_eq!(inspect, "0");
    ok(d.wharf(&["network", "rm", "cyc"]));
    assert_eq!(iptables_rules("wt-cyc"), 0);
    assert!(!links().contains("wt-cyc"));
    // A stop with nothing running takes the rest away.
    let bridge = d.bridge.clone();
    d.stop();
    assert!(!links().contains(&format!(" {bridge}:")), "{}", links());
    assert!(nft_table(&d).is_none());
    assert_eq!(iptables_rules(&bridge), 0);
}

#[test]
fn network_create_options_and_endpoint_flags() {
    let d = Daemon::with_busybox();
    let base: Ipv4Addr = d
        .pool
        .strip_prefix("base=")
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // The daemon pool's second-to-last /28; network_modes takes the last.
    let o = base.octets();
    let at = |n: u8| Ipv4Addr::new(o[0], o[1], o[2], o[3] + 96 + n);
    let (subnet, gw, range) = (format!("{}/28", at(0)), at(14), format!("{}/29", at(8)));
    let bridge = format!("wto{}", std::process::id() % 100_000);
    ok(d.wharf(&[
        "network",
        "create",
        "--subnet",
        &subnet,
        "--gateway",
        &gw.to_string(),
        "--ip-range",
        &range,
        "--label",
        "team=opt",
        "-o",
        &format!("com.docker.network.bridge.name={bridge}"),
        "optnet",
    ]));
    let ipam = ok(d.wharf(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}} {{.IPRange}}{{end}} {{.Labels.team}}",
        "optnet",
    ]));
    assert_eq!(ipam, format!("{subnet} {gw} {range} opt"));
    assert!(links().contains(&format!(" {bridge}:")), "{}", links());

    // --ip, --mac-address, --add-host (host-gateway is the network's gateway), --dns-search.
    let ip = at(9);
    let out = ok(d.wharf(&[
        "run",
        "--rm",
        "--network",
        "optnet",
        "--ip",
        &ip.to_string(),
        "--mac-address",
        "02:42:0a:0b:0c:0d",
        "--add-host",
        "db:192.0.2.7",
        "--add-host",
        "gw:host-gateway",
        "--dns-search",
        "example.test",
        "busybox",
        "sh",
        "-c",
        "ip addr show eth0; ip route; cat /etc/hosts /etc/resolv.conf",
    ]));
    assert!(out.contains(&format!("inet {ip}/28")), "{out}");
    assert!(out.contains("link/ether 02:42:0a:0b:0c:0d"), "{out}");
    assert!(out.contains(&format!("default via {gw}")), "{out}");
    assert!(out.contains("192.0.2.7\tdb\n"), "{out}");
    assert!(out.contains(&format!("{gw}\tgw\n")), "{out}");
    assert!(out.contains("search example.test"), "{out}");

    // Without --ip the address comes from the range, never the gateway.
    let got = ok(d.wharf(&[
        "run",
        "--rm",
        "--network",
        "optnet",
        "busybox",
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "eth0",
    ]));
    let addr: Ipv4Addr = got
        .split_whitespace()
        .nth(3)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(addr >= at(8) && addr <= at(15) && addr != gw, "{got}");

    // --dns replaces the host's resolvers (no traffic: the file only).
    let resolv = ok(d.wharf(&[
        "run",
        "--rm",
        "--dns",
        "192.0.2.53",
        "busybox",
        "cat",
        "/etc/resolv.conf",
    ]));
    assert!(
        resolv.lines().any(|l| l == "nameserver 192.0.2.53"),
        "{resolv}"
    );
    assert_eq!(resolv.matches("nameserver").count(), 1, "{resolv}");

    // An address outside the network is refused, and leaves nothing behind.
    let bad = d.wharf(&[
        "run",
        "--rm",
        "--network",
        "optnet",
        "--ip",
        "192.0.2.9",
        "busybox",
        "true",
    ]);
    assert!(!bad.status.success());
    assert_eq!(ok(d.wharf(&["ps", "-aq"])), "");

    // NetworkingConfig through the API: docker's run with --ip.
    if std::path::Path::new(DOCKER28).exists() {
        let ip = at(10);
        let out = ok(d.docker(
            DOCKER28,
            &[
                "run",
                "--rm",
                "--network",
                "optnet",
                "--ip",
                &ip.to_string(),
                "busybox",
                "ip",
                "-4",
                "-o",
                "addr",
                "show",
                "eth0",
            ],
        ));
        assert!(out.contains(&format!("inet {ip}/28")), "{out}");
        let theirs = ok(d.docker(
            DOCKER28,
            &[
                "network",
                "inspect",
                "-f",
                "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}} {{.IPRange}}{{end}}",
                "optnet",
            ],
        ));
        assert_eq!(theirs, format!("{subnet} {gw} {range}"));
    }
    ok(d.wharf(&["network", "rm", "optnet"]));
    assert!(!links().contains(&format!(" {bridge}:")), "{}", links());
}

#[test]
fn failed_start_leaves_no_bridge_or_rules() {
    // An nft that always fails: the daemon's first firewall rebuild fails, so must its start.
    let base = crate::harness::unique_dir("wharf-test-nonft");
    let bin = base.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let nft = bin.join("nft");
    std::fs::write(&nft, "#!/bin/sh\necho refused >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&nft, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (bridge, bip, pool) = crate::harness::unique_network();
    let mut child = Command::new(crate::harness::WHARF)
        .args(["daemon", "--root"])
        .arg(base.join("root"))
        .arg("--run-root")
        .arg(base.join("run"))
        .args([
            "--bridge",
            &bridge,
            "--bip",
            &bip,
            "--default-address-pool",
            &pool,
        ])
        .env("PATH", path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon started without a working nft");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let left = (
        links().contains(&format!(" {bridge}:")),
        iptables_rules(&bridge),
    );
    let _ = Command::new("ip").args(["link", "del", &bridge]).status();
    let _ = std::fs::remove_dir_all(&base);
    assert!(!status.success());
    assert!(err.contains("refused"), "{err}");
    assert_eq!(left, (false, 0), "bridge or FORWARD rules left behind");
}
