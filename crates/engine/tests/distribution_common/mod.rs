#![allow(dead_code)]
//! Helpers for the registry tests: Debian's docker-registry on a free loopback port, a small
//! HTTP server (fake registries, a token server), image archives and progress collection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use wharf_engine::distribution::{Distribution, Progress};

pub const REGISTRY: &str = "/usr/bin/docker-registry";

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `addr` (the server is starting).
fn wait_listening(addr: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("registry exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("registry on {addr} did not start");
}

/// A docker-registry process with its own storage; stopped and removed when dropped.
pub struct Registry {
    child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with("")
    }

    /// htpasswd (bcrypt) basic auth for one user.
    pub fn start_htpasswd(user: &str, password: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash(password, 5).unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, format!("{user}:{hash}\n")).unwrap();
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: wharf-test\n    path: {}\n",
            path.display()
        );
        Registry::start_in(dir, &auth)
    }

    /// Token auth trusting `cert` (the token server's signing certificate).
    pub fn start_token(realm: &str, cert: &Path) -> Registry {
        let auth = format!(
            "auth:\n  token:\n    realm: {realm}\n    service: wharf-test\n    issuer: wharf-test-issuer\n    rootcertbundle: {}\n",
            cert.display()
        );
        Registry::start_with(&auth)
    }

    fn start_with(auth: &str) -> Registry {
        Registry::start_in(tempfile::tempdir().unwrap(), auth)
    }

    fn start_in(dir: tempfile::TempDir, auth: &str) -> Registry {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
            storage.display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let mut child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_listening(&addr, &mut child);
        Registry { child, addr, dir }
    }

    /// The stored data of blob `digest` (to damage it).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request to the small server.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn params(&self) -> Vec<(String, String)> {
        self.query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// A Content-Length to claim instead of the body's (to cut a response short).
    pub claimed_length: Option<u64>,
}

impl Response {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
            claimed_length: None,
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Response {
        self.headers.push((k.into(), v.into()));
        self
    }
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// A one-request-per-connection HTTP/1.1 server on a thread; stopped when dropped.
pub struct HttpServer {
    pub addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    pub fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let h = handler.clone();
                std::thread::spawn(move || serve(conn, &*h));
            }
        });
        HttpServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

fn serve(conn: TcpStream, handler: &Handler) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let req = Request {
        method,
        path,
        query,
        headers,
    };
    if let Some(len) = req
        .header("content-length")
        .and_then(|l| l.parse::<u64>().ok())
    {
        let _ = std::io::copy(&mut (&mut reader).take(len), &mut std::io::sink());
    }
    let res = handler(&req);
    let mut out = conn;
    let reason = match res.status {
        200 => "OK",
        206 => "Partial Content",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n",
        res.status,
        res.claimed_length.unwrap_or(res.body.len() as u64)
    );
    for (k, v) in &res.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes());
    if req.method != "HEAD" {
        let _ = out.write_all(&res.body);
    }
    let _ = out.flush();
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Forwards requests to `upstream`, holding back any GET of `stall` until released.
pub fn stalling_proxy(upstream: String, stall: String, release: Arc<AtomicBool>) -> HttpServer {
    HttpServer::start(move |req| {
        if req.method == "GET" && req.path.ends_with(&stall) {
            while !release.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            return Response::new(503, "released");
        }
        forward(&upstream, req)
    })
}

pub fn forward(upstream: &str, req: &Request) -> Response {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(upstream).unwrap();
    let target = if req.query.is_empty() {
        req.path.clone()
    } else {
        format!("{}?{}", req.path, req.query)
    };
    let mut head = format!(
        "{} {target} HTTP/1.1\r\nHost: {upstream}\r\nConnection: close\r\n",
        req.method
    );
    for (k, v) in &req.headers {
        if ["accept", "authorization", "range"].contains(&k.to_ascii_lowercase().as_str()) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let text = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut res = Response::new(status, raw[split + 4..].to_vec());
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim();
            if !["content-length", "connection", "transfer-encoding"]
                .contains(&k.to_ascii_lowercase().as_str())
            {
                res = res.header(k, v.trim());
            }
        }
    }
    res
}

/// A progress channel and a task collecting what it receives.
pub struct Collected {
    pub tx: mpsc::Sender<Progress>,
    task: tokio::task::JoinHandle<Vec<Progress>>,
}

impl Collected {
    pub fn new() -> Collected {
        let (tx, mut rx) = mpsc::channel(1024);
        let task = tokio::spawn(async move {
            let mut all = Vec::new();
            while let Some(p) = rx.recv().await {
                all.push(p);
            }
            all
        });
        Collected { tx, task }
    }

    pub async fn finish(self) -> Vec<Progress> {
        drop(self.tx);
        self.task.await.unwrap()
    }
}

pub fn statuses(all: &[Progress]) -> Vec<String> {
    all.iter().filter_map(|p| p.status.clone()).collect()
}

pub fn distribution(store: &Arc<wharf_engine::image::ImageStore>, root: &Path) -> Distribution {
    let creds = root.join("docker-config");
    Distribution::new(store.clone(), root)
        .unwrap()
        .with_credentials(wharf_engine::distribution::CredentialStore::at(&creds))
}

/// A store on a fresh temporary root, shareable with a [`Distribution`].
pub struct Root {
    pub dir: tempfile::TempDir,
    pub store: Option<Arc<wharf_engine::image::ImageStore>>,
}

impl Root {
    pub fn new() -> Root {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Root { dir, store: None };
        r.reopen();
        r
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn store(&self) -> &Arc<wharf_engine::image::ImageStore> {
        self.store.as_ref().unwrap()
    }

    pub fn dist(&self) -> Distribution {
        distribution(self.store(), self.dir.path())
    }

    /// Reopens the store, as a restarted daemon does (garbage collection runs).
    pub fn reopen(&mut self) {
        // Tasks of an aborted pull may still hold the store (and the database) for a moment.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .store
            .as_ref()
            .is_some_and(|s| Arc::strong_count(s) > 1)
        {
            assert!(Instant::now() < deadline, "the old store is still in use");
            std::thread::sleep(Duration::from_millis(10));
        }
        self.store = None;
        let meta =
            Arc::new(wharf_engine::meta::Meta::open(&self.dir.path().join("meta.redb")).unwrap());
        self.store = Some(Arc::new(
            wharf_engine::image::ImageStore::open(self.dir.path(), meta).unwrap(),
        ));
    }

    /// Everything a refused pull must leave as it was.
    pub fn state(&self) -> Vec<Vec<String>> {
        let mut ids: Vec<String> = self
            .store()
            .list()
            .unwrap()
            .into_iter()
            .map(|i| format!("{} {:?} {:?}", i.id, i.repo_tags, i.repo_digests))
            .collect();
        ids.sort();
        let d = self.dir.path();
        vec![
            ids,
            names(&d.join("snapshots")),
            names(&d.join("content/blobs/sha256")),
            names(&d.join("content/ingest")),
            names(&d.join("content/leases")),
        ]
    }
}

pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// An OCI registry client for the tests' own raw uploads.
pub fn raw_client() -> oci_client::Client {
    oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        use_monolithic_push: true,
        ..Default::default()
    })
}

pub fn oci_ref(addr: &str, repo: &str, tag: &str) -> oci_client::Reference {
    oci_client::Reference::with_tag(addr.into(), repo.into(), tag.into())
}

/// Uploads `data` as a blob of `repo`; returns its digest.
pub async fn put_blob(addr: &str, repo: &str, data: &[u8]) -> String {
    let digest = wharf_engine::content::Digest::of(data).to_string();
    raw_client()
        .push_blob(&oci_ref(addr, repo, "latest"), data.to_vec(), &digest)
        .await
        .unwrap();
    digest
}

/// Uploads a manifest under `tag`; returns its digest.
pub async fn put_manifest(
    addr: &str,
    repo: &str,
    tag: &str,
    media_type: &str,
    body: &[u8],
) -> String {
    raw_client()
        .push_manifest_raw(
            &oci_ref(addr, repo, tag),
            body.to_vec(),
            media_type.parse().unwrap(),
        )
        .await
        .unwrap();
    wharf_engine::content::Digest::of(body).to_string()
}

/// A single-platform image uploaded by hand: gzip layers and a config. Returns the manifest
/// digest, the config digest, and the layer digests.
pub async fn put_image(
    addr: &str,
    repo: &str,
    tag: Option<&str>,
    arch: &str,
    layers: &[Vec<u8>],
) -> (String, String, Vec<String>, usize) {
    use wharf_engine::content::Digest;
    let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_digest = put_blob(addr, repo, &config).await;
    let mut descs = Vec::new();
    let mut digests = Vec::new();
    for l in layers {
        let gz = super::images_common::gzip(l);
        let d = put_blob(addr, repo, &gz).await;
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d, "size": gz.len()}));
        digests.push(d);
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let tag_or_digest = tag
        .map(str::to_string)
        .unwrap_or_else(|| Digest::of(&manifest).to_string());
    let md = put_manifest(
        addr,
        repo,
        &tag_or_digest,
        "application/vnd.oci.image.manifest.v1+json",
        &manifest,
    )
    .await;
    (md, config_digest, digests, manifest.len())
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A token server for the registry's `token` auth: RS256 JWTs signed with a self-signed
/// certificate's key, granting what is asked to `alice` and nothing to anyone else.
pub struct TokenServer {
    server: HttpServer,
    pub cert: PathBuf,
    _dir: tempfile::TempDir,
}

/// libtrust's key id: the first 240 bits of the SHA-256 of the DER public key, in base32,
/// in groups of four.
fn key_id(der: &[u8]) -> String {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(der);
    let b32 = base32(&hash[..30]);
    b32.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":")
}

fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for &b in data {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

impl TokenServer {
    pub fn start() -> TokenServer {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        run(Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=wharf-test-token",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]));
        let der = Command::new("openssl")
            .args([
                "rsa",
                "-in",
                key.to_str().unwrap(),
                "-pubout",
                "-outform",
                "DER",
            ])
            .output()
            .unwrap()
            .stdout;
        let kid = key_id(&der);
        let server = HttpServer::start(move |req| {
            use base64::Engine as _;
            let granted = match req
                .header("authorization")
                .and_then(|a| a.strip_prefix("Basic "))
            {
                Some(b) => {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .unwrap_or_default();
                    let text = String::from_utf8(raw).unwrap_or_default();
                    if text != "alice:s3cret" {
                        return Response::new(401, r#"{"details":"bad credentials"}"#);
                    }
                    true
                }
                None => false,
            };
            let mut access = Vec::new();
            for (k, v) in req.params() {
                if k != "scope" {
                    continue;
                }
                for scope in v.split(' ') {
                    let parts: Vec<&str> = scope.split(':').collect();
                    if parts.len() == 3 && granted {
                        access.push(serde_json::json!({
                            "type": parts[0], "name": parts[1],
                            "actions": parts[2].split(',').collect::<Vec<_>>(),
                        }));
                    }
                }
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": kid});
            let claims = serde_json::json!({
                "iss": "wharf-test-issuer", "sub": if granted { "alice" } else { "" },
                "aud": "wharf-test", "exp": now + 600, "nbf": now - 60, "iat": now,
                "jti": format!("{now}-{}", std::process::id()), "access": access,
            });
            let input = format!(
                "{}.{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header.to_string()),
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let mut child = Command::new("openssl")
                .args(["dgst", "-sha256", "-sign", key.to_str().unwrap()])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            let sig = child.wait_with_output().unwrap().stdout;
            let token = format!(
                "{input}.{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
            );
            let body =
                serde_json::json!({"token": token, "access_token": token, "expires_in": 600});
            Response::new(200, body.to_string()).header("Content-Type", "application/json")
        });
        TokenServer {
            server,
            cert,
            _dir: dir,
        }
    }

    pub fn realm(&self) -> String {
        format!("http://{}/token", self.server.addr)
    }
}
