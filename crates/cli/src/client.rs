//! HTTP/1.1 to the daemon over its unix socket: JSON requests, streamed bodies, and hijacked
//! (`Upgrade: tcp`) connections for attach and exec. One connection per request; paths carry
//! no version prefix, so the daemon answers in its own current API version and no `/_ping`
//! round trip is spent negotiating. When the default socket has no daemon, one is started.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the wharf daemon at {host}: is the daemon running?")]
    Connect {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Error response from daemon: {message}")]
    Daemon { status: u16, message: String },
    #[error("unsupported host {0}: only unix:// sockets are supported")]
    Host(String),
    #[error("http exchange with the daemon failed")]
    Http(#[from] hyper::Error),
    #[error("building the request")]
    Request(#[from] hyper::http::Error),
    #[error("unexpected response from the daemon")]
    Decode(#[from] serde_json::Error),
    #[error("the daemon did not switch protocols (status {0})")]
    NoUpgrade(u16),
    #[error("starting the wharf daemon")]
    Spawn(#[source] std::io::Error),
    #[error("the wharf daemon did not come up within 10 seconds; see {0}")]
    StartTimeout(PathBuf),
    #[error("the wharf daemon exited at start ({status}); see {log}")]
    StartFailed { status: String, log: PathBuf },
}

impl ClientError {
    /// The HTTP status of a daemon error, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Daemon { status, .. } => Some(*status),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, ClientError>;

pub type Body = BoxBody<Bytes, std::io::Error>;

/// Where to find the daemon, and how to start one when it is the default socket.
#[derive(Debug, Clone)]
pub struct Target {
    pub socket: PathBuf,
    pub autostart: Option<Autostart>,
}

#[derive(Debug, Clone)]
pub struct Autostart {
    pub root: PathBuf,
    pub run: PathBuf,
}

impl Target {
    /// `-H`, then `WHARF_HOST`, then `DOCKER_HOST`, then `<WHARF_RUN or /run/wharf>/wharf.sock`.
    pub fn resolve(flag: Option<&str>) -> Result<Target> {
        Target::resolve_with(flag, |k| std::env::var(k).ok())
    }

    fn resolve_with(flag: Option<&str>, lookup: impl Fn(&str) -> Option<String>) -> Result<Target> {
        let env = |k: &str| lookup(k).filter(|v| !v.is_empty());
        if let Some(host) = flag
            .map(str::to_string)
            .or_else(|| env("WHARF_HOST"))
            .or_else(|| env("DOCKER_HOST"))
        {
            return Ok(Target {
                socket: parse_host(&host)?,
                autostart: None,
            });
        }
        let run = PathBuf::from(env("WHARF_RUN").unwrap_or_else(|| "/run/wharf".into()));
        let root = PathBuf::from(env("WHARF_ROOT").unwrap_or_else(|| "/var/lib/wharf".into()));
        Ok(Target {
            socket: run.join("wharf.sock"),
            autostart: Some(Autostart { root, run }),
        })
    }
}

fn parse_host(host: &str) -> Result<PathBuf> {
    match host.split_once("://") {
        Some(("unix", path)) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(ClientError::Host(host.to_string())),
    }
}

#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    started: AtomicBool,
}

/// A connection the daemon handed over to raw bytes (attach, exec start).
pub struct Hijacked {
    pub stream: UnixStream,
    /// Bytes hyper had already read past the response head.
    pub buffered: Bytes,
}

/// Percent-encodes a query value or a path segment (keeping `/` and `:` in paths).
pub fn encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path segment naming an object (a container, or an image reference with `/` and `:`).
pub fn seg(s: &str) -> String {
    encode(s, b"/:@")
}

/// Builds a query string.
#[derive(Default)]
pub struct Query(String);

impl Query {
    pub fn new() -> Query {
        Query::default()
    }

    pub fn push(mut self, key: &str, value: impl AsRef<str>) -> Query {
        self.0.push(if self.0.is_empty() { '?' } else { '&' });
        self.0.push_str(key);
        self.0.push('=');
        self.0.push_str(&encode(value.as_ref(), &[]));
        self
    }

    pub fn opt(self, key: &str, value: Option<impl AsRef<str>>) -> Query {
        match value {
            Some(v) => self.push(key, v),
            None => self,
        }
    }

    pub fn flag(self, key: &str, on: bool) -> Query {
        if on { self.push(key, "1") } else { self }
    }

    pub fn path(&self, base: &str) -> String {
        format!("{base}{}", self.0)
    }
}

pub fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

pub fn json_body<T: Serialize>(v: &T) -> Result<Body> {
    Ok(Full::new(Bytes::from(serde_json::to_vec(v)?))
        .map_err(|never| match never {})
        .boxed())
}

/// A request body fed from a channel (file or stdin read on a blocking thread).
pub fn channel_body(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> Body {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk.map(Frame::data), rx))
    });
    StreamBody::new(stream).boxed()
}

/// Streams a blocking reader into a request body from a thread of its own.
pub fn reader_body<R: std::io::Read + Send + 'static>(mut reader: R) -> Body {
    let (tx, rx) = mpsc::channel(8);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    channel_body(rx)
}

impl Client {
    pub fn new(target: Target) -> Client {
        Client {
            inner: Arc::new(Inner {
                target,
                started: AtomicBool::new(false),
            }),
        }
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.inner.target.socket.display())
    }

    async fn connect(&self) -> Result<UnixStream> {
        let sock = &self.inner.target.socket;
        match UnixStream::connect(sock).await {
            Ok(s) => Ok(s),
            Err(e) => {
                let absent = matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                );
                match &self.inner.target.autostart {
                    Some(a) if absent && !self.inner.started.swap(true, Ordering::SeqCst) => {
                        start_daemon(a, sock).await?;
                        UnixStream::connect(sock)
                            .await
                            .map_err(|source| ClientError::Connect {
                                host: self.host(),
                                source,
                            })
                    }
                    _ => Err(ClientError::Connect {
                        host: self.host(),
                        source: e,
                    }),
                }
            }
        }
    }

    /// Sends a request; a status of 400 or more becomes `ClientError::Daemon`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body,
        content_type: Option<&str>,
    ) -> Result<Response<Incoming>> {
        self.send_with(method, path, body, content_type, &[]).await
    }

    /// `send` with extra request headers.
    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Body,
        content_type: Option<&str>,
        headers: &[(&str, String)],
    ) -> Result<Response<Incoming>> {
        let stream = self.connect().await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "docker");
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let resp = sender.send_request(req.body(body)?).await?;
        check(resp).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.send(Method::GET, path, empty(), None).await?;
        read_json(resp).await
    }

    /// GET returning the raw body bytes (inspect keeps the daemon's own field order).
    pub async fn get_bytes(&self, path: &str) -> Result<Bytes> {
        let resp = self.send(Method::GET, path, empty(), None).await?;
        Ok(resp.into_body().collect().await?.to_bytes())
    }

    pub async fn post<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let resp = match body {
            Some(b) => {
                self.send(Method::POST, path, json_body(b)?, Some("application/json"))
                    .await?
            }
            None => self.send(Method::POST, path, empty(), None).await?,
        };
        read_json(resp).await
    }

    /// POST whose answer carries nothing we need (204 or a body we ignore).
    pub async fn post_empty(&self, path: &str) -> Result<()> {
        let resp = self.send(Method::POST, path, empty(), None).await?;
        resp.into_body().collect().await?;
        Ok(())
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.send(Method::DELETE, path, empty(), None).await?;
        read_json(resp).await
    }

    pub async fn delete_empty(&self, path: &str) -> Result<()> {
        let resp = self.send(Method::DELETE, path, empty(), None).await?;
        resp.into_body().collect().await?;
        Ok(())
    }

    /// POST with `Upgrade: tcp`; on 101 the socket itself is returned.
    pub async fn hijack<B: Serialize>(&self, path: &str, body: Option<&B>) -> Result<Hijacked> {
        let stream = self.connect().await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, "docker")
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, "tcp");
        let body = match body {
            Some(b) => {
                req = req.header(CONTENT_TYPE, "application/json");
                json_body(b)?
            }
            None => empty(),
        };
        let resp = check(sender.send_request(req.body(body)?).await?).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(ClientError::NoUpgrade(resp.status().as_u16()));
        }
        let upgraded = hyper::upgrade::on(resp).await?;
        match upgraded.downcast::<TokioIo<UnixStream>>() {
            Ok(parts) => Ok(Hijacked {
                stream: parts.io.into_inner(),
                buffered: parts.read_buf,
            }),
            Err(_) => Err(ClientError::NoUpgrade(101)),
        }
    }
}

async fn check(resp: Response<Incoming>) -> Result<Response<Incoming>> {
    let status = resp.status();
    if status.as_u16() < 400 {
        return Ok(resp);
    }
    let body = resp.into_body().collect().await?.to_bytes();
    let message = match serde_json::from_slice::<wharf_api::ErrorBody>(&body) {
        Ok(e) => e.message,
        Err(_) => String::from_utf8_lossy(&body).trim().to_string(),
    };
    Err(ClientError::Daemon {
        status: status.as_u16(),
        message,
    })
}

pub async fn read_json<T: DeserializeOwned>(resp: Response<Incoming>) -> Result<T> {
    let body = resp.into_body().collect().await?.to_bytes();
    if body.is_empty() {
        return Ok(serde_json::from_slice(b"null")?);
    }
    Ok(serde_json::from_slice(&body)?)
}

/// The hidden verb that puts a started daemon in a session of its own, then becomes it.
pub const DETACH_VERB: &str = "__detach";

async fn start_daemon(a: &Autostart, sock: &Path) -> Result<()> {
    let exe = std::env::current_exe().map_err(ClientError::Spawn)?;
    std::fs::create_dir_all(&a.root).map_err(ClientError::Spawn)?;
    let log_path = a.root.join("daemon.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(ClientError::Spawn)?;
    let log2 = log.try_clone().map_err(ClientError::Spawn)?;
    let mut child = std::process::Command::new(&exe)
        .arg(DETACH_VERB)
        .arg(&exe)
        .arg("daemon")
        .arg("--root")
        .arg(&a.root)
        .arg("--run-root")
        .arg(&a.run)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(ClientError::Spawn)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(ClientError::StartFailed {
                status: status.to_string(),
                log: log_path,
            });
        }
        if ping(sock).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ClientError::StartTimeout(log_path));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn ping(sock: &Path) -> bool {
    let Ok(stream) = UnixStream::connect(sock).await else {
        return false;
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return false;
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let Ok(req) = Request::get("/_ping").header(HOST, "docker").body(empty()) else {
        return false;
    };
    matches!(sender.send_request(req).await, Ok(r) if r.status().is_success())
}

/// Runs the `__detach` verb: `setsid`, then exec the rest of the arguments.
pub fn detach_and_exec(args: &[std::ffi::OsString]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    if let Err(e) = nix::unistd::setsid() {
        return std::io::Error::from(e);
    }
    match args.split_first() {
        Some((prog, rest)) => std::process::Command::new(prog).args(rest).exec(),
        None => std::io::Error::new(std::io::ErrorKind::InvalidInput, "nothing to run"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            parse_host("unix:///run/x.sock").ok(),
            Some(PathBuf::from("/run/x.sock"))
        );
        assert!(matches!(
            parse_host("tcp://1.2.3.4:2375"),
            Err(ClientError::Host(_))
        ));
        assert!(matches!(
            parse_host("/run/x.sock"),
            Err(ClientError::Host(_))
        ));
        assert!(matches!(parse_host("unix://"), Err(ClientError::Host(_))));
    }

    #[test]
    fn host_precedence() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let both: &[(&str, &str)] = &[
            ("WHARF_HOST", "unix:///w.sock"),
            ("DOCKER_HOST", "unix:///d.sock"),
        ];
        let t = Target::resolve_with(Some("unix:///flag.sock"), env(both)).unwrap();
        assert_eq!(
            (t.socket, t.autostart.is_none()),
            (PathBuf::from("/flag.sock"), true)
        );
        let t = Target::resolve_with(None, env(both)).unwrap();
        assert_eq!(t.socket, PathBuf::from("/w.sock"));
        let t = Target::resolve_with(None, env(&[("DOCKER_HOST", "unix:///d.sock")])).unwrap();
        assert_eq!(t.socket, PathBuf::from("/d.sock"));
        assert!(
            Target::resolve_with(None, env(&[("DOCKER_HOST", "tcp://127.0.0.1:2375")])).is_err()
        );
        let t = Target::resolve_with(
            None,
            env(&[("WHARF_RUN", "/tmp/r"), ("WHARF_ROOT", "/tmp/root")]),
        )
        .unwrap();
        assert_eq!(t.socket, PathBuf::from("/tmp/r/wharf.sock"));
        let a = t.autostart.unwrap();
        assert_eq!(
            (a.root, a.run),
            (PathBuf::from("/tmp/root"), PathBuf::from("/tmp/r"))
        );
        let t = Target::resolve_with(None, env(&[("WHARF_HOST", "")])).unwrap();
        assert_eq!(t.socket, PathBuf::from("/run/wharf/wharf.sock"));
    }

    #[test]
    fn queries() {
        let q = Query::new()
            .push("fromSrc", "-")
            .push("changes", "CMD [\"sh\"]")
            .opt("tag", None::<&str>)
            .flag("force", true)
            .flag("noprune", false);
        assert_eq!(
            q.path("/images/create"),
            "/images/create?fromSrc=-&changes=CMD%20%5B%22sh%22%5D&force=1"
        );
        assert_eq!(seg("localhost:5000/a/b:v1"), "localhost:5000/a/b:v1");
        assert_eq!(seg("a b"), "a%20b");
    }
}
