//! `wharf daemon`: the Docker Engine API on a unix socket. Routes translate HTTP to calls on
//! the engine and back; nothing else lives here.

mod body;
mod error;
mod hijack;
mod routes;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tower::ServiceExt;
use wharf_engine::{Engine, EngineConfig};

struct Options {
    root: PathBuf,
    run: PathBuf,
    cgroup_parent: String,
    debug: bool,
    bridge: Option<String>,
    bip: Option<String>,
    pool: Option<String>,
    mtu: Option<u32>,
}

fn parse_args() -> anyhow::Result<Options> {
    let env_path = |k: &str, default: &str| {
        std::env::var_os(k)
            .map(PathBuf::from)
            .unwrap_or_else(|| default.into())
    };
    let mut o = Options {
        root: env_path("WHARF_ROOT", "/var/lib/wharf"),
        run: env_path("WHARF_RUN", "/run/wharf"),
        cgroup_parent: "wharf".into(),
        debug: false,
        bridge: None,
        bip: None,
        pool: None,
        mtu: None,
    };
    let mut args = std::env::args().skip(2);
    while let Some(a) = args.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .with_context(|| format!("flag {flag} needs a value"))
        };
        match flag.as_str() {
            "--root" | "--data-root" => o.root = value()?.into(),
            "--run-root" | "--exec-root" => o.run = value()?.into(),
            "--cgroup-parent" => o.cgroup_parent = value()?,
            "-D" | "--debug" => o.debug = true,
            "-b" | "--bridge" => o.bridge = Some(value()?),
            "--bip" => o.bip = Some(value()?),
            "--default-address-pool" => o.pool = Some(value()?),
            "--mtu" => o.mtu = Some(value()?.parse().context("--mtu")?),
            "-h" | "--help" => {
                println!(
                    "Usage: wharf daemon [--root DIR] [--run-root DIR] [--cgroup-parent NAME] [--debug]\n                    [--bridge NAME] [--bip CIDR] [--default-address-pool base=CIDR,size=N] [--mtu N]\n\nServe the Docker Engine API on <run-root>/wharf.sock. Flags override <root>/daemon.json\n(keys: bridge, bip, default-address-pools, mtu)."
                );
                std::process::exit(0);
            }
            other => bail!("unknown flag: {other}"),
        }
    }
    o.root = absolute(&o.root)?;
    o.run = absolute(&o.run)?;
    Ok(o)
}

/// The network options: `<root>/daemon.json` first, flags over it.
fn network_options(o: &Options) -> anyhow::Result<wharf_engine::network::NetworkOptions> {
    use wharf_engine::network::{AddressPool, NetworkOptions};
    let mut n = NetworkOptions::default();
    let mut bridge = None;
    let mut bip = None;
    let mut pool = None;
    let mut mtu = None;
    let path = o.root.join("daemon.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        bridge = v["bridge"].as_str().map(String::from);
        bip = v["bip"].as_str().map(String::from);
        mtu = v["mtu"].as_u64().map(|m| m as u32);
        if let Some(p) = v["default-address-pools"]
            .as_array()
            .and_then(|a| a.first())
        {
            pool = Some(format!(
                "base={},size={}",
                p["base"].as_str().unwrap_or_default(),
                p["size"].as_u64().unwrap_or(24)
            ));
        }
    }
    if let Some(b) = o.bridge.clone().or(bridge) {
        if b.is_empty() || b.len() > 15 || b.contains(['/', ' ']) {
            bail!("invalid bridge name: {b}");
        }
        n.bridge = b;
    }
    if let Some(b) = o.bip.clone().or(bip) {
        n.bip = b.parse().with_context(|| format!("invalid --bip: {b}"))?;
        if n.bip.addr() == n.bip.network() {
            bail!("invalid --bip {b}: give the gateway address, e.g. 10.89.0.1/24");
        }
    }
    if let Some(p) = o.pool.clone().or(pool) {
        n.pool =
            AddressPool::parse(&p).map_err(|e| anyhow::anyhow!("--default-address-pool: {e}"))?;
    }
    if let Some(m) = o.mtu.or(mtu) {
        n.mtu = m;
    }
    Ok(n)
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

pub fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("wharf daemon: {e:#}");
            return ExitCode::from(125);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(if opts.debug {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        })
        .with_ansi(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wharf daemon: starting the async runtime: {e}");
            return ExitCode::from(125);
        }
    };
    match runtime.block_on(serve(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("wharf daemon: {e:#}");
            ExitCode::from(125)
        }
    }
}

async fn serve(opts: Options) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.run)
        .with_context(|| format!("creating {}", opts.run.display()))?;
    std::fs::create_dir_all(&opts.root)
        .with_context(|| format!("creating {}", opts.root.display()))?;
    let sock = opts.run.join("wharf.sock");
    if tokio::net::UnixStream::connect(&sock).await.is_ok() {
        bail!("a daemon is already serving {}", sock.display());
    }
    let _ = std::fs::remove_file(&sock);
    let pid_file = opts.run.join("wharf.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .context("writing the pid file")?;

    let network = network_options(&opts)?;
    let engine = Engine::open(EngineConfig {
        root: opts.root.clone(),
        run: opts.run.clone(),
        cgroup_parent: opts.cgroup_parent,
        network,
    })
    .await
    .context("opening the engine state")?;
    let listener = tokio::net::UnixListener::bind(&sock)
        .with_context(|| format!("binding {}", sock.display()))?;
    set_mode(&sock, 0o660)?;
    tracing::info!(socket = %sock.display(), root = %opts.root.display(), "serving the Engine API");

    let router = routes::router(engine.clone());
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let router = router.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let router = router.clone();
                        async move {
                            let mut resp = match routes::strip_version(req) {
                                Ok(req) => router.oneshot(req).await?,
                                Err(resp) => *resp,
                            };
                            routes::add_common_headers(&mut resp);
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades();
                    if let Err(e) = conn.await {
                        tracing::debug!("connection: {e}");
                    }
                });
            }
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // Containers and their shims keep running; a restarted daemon reconnects to them.
    engine.shutdown().await;
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&pid_file);
    tracing::info!("stopped");
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// The engine shared by every handler.
pub(crate) type SharedEngine = Arc<Engine>;
