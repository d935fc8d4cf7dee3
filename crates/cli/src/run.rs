//! `run`, `create`, `start`, `attach` and `exec`: creating containers (pulling on a missing
//! image), hijacked attach sessions with signal forwarding and terminal resizing, and
//! docker's exit codes (the container's own; 125 engine error; 126 cannot invoke; 127 not
//! found).

use hyper::Method;
use serde::Deserialize;
use serde_json::Value;
use wharf_api::models::{ExecConfig, ExecStartConfig};

use crate::client::{Client, ClientError, Hijacked, Query, read_json, seg};
use crate::createopts::{self, Built, OptsError, Pull, Streams};
use crate::images;
use crate::opts::{AttachArgs, CreateArgs, ExecArgs, RunArgs, StartArgs};
use crate::registry::{self, PullOpts};
use crate::stdio::{self, InputEnd, RawMode, StdioError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Opts(#[from] OptsError),
    #[error(transparent)]
    Stdio(#[from] StdioError),
    #[error(transparent)]
    Pull(#[from] registry::RegistryError),
    /// Starting failed; the exit code follows docker's reading of the message.
    #[error("{0}")]
    Start(ClientError, u8),
    #[error("{0}")]
    Wait(String),
    #[error("the input device is not a TTY")]
    NotATty,
    #[error("container ID file found, make sure the other container isn't running or delete {0}")]
    CidFileExists(String),
    #[error("writing the container ID file {path}")]
    CidFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("you cannot start and attach multiple containers at once")]
    AttachMany,
    #[error("you cannot attach to a stopped container, start it first")]
    NotRunning,
    #[error("you cannot attach to a paused container, unpause it first")]
    Paused,
}

impl RunError {
    /// `run`/`create`: 125 unless the container's own start failure says otherwise.
    pub fn run_exit_code(&self) -> u8 {
        match self {
            RunError::Start(_, code) => *code,
            RunError::NotATty => 1,
            _ => 125,
        }
    }

    /// `start`/`attach`/`exec`: 1, or the start failure's code.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Start(_, code) => *code,
            _ => 1,
        }
    }
}

/// docker's reading of a failed start: 127 not found, 126 cannot invoke, else `default`.
fn start_failure(e: ClientError, default: u8) -> RunError {
    let msg = e.to_string();
    let code = if msg.contains("executable file not found")
        || msg.contains("no such file or directory")
        || msg.contains("system cannot find the file specified")
    {
        127
    } else if msg.contains("permission denied") || msg.contains("is a directory") {
        126
    } else {
        default
    };
    RunError::Start(e, code)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct IdResponse {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Warnings")]
    warnings: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WaitBody {
    #[serde(rename = "StatusCode")]
    status_code: i64,
    #[serde(rename = "Error")]
    error: Option<WaitError>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WaitError {
    #[serde(rename = "Message")]
    message: String,
}

async fn create(client: &Client, built: &Built) -> Result<String, RunError> {
    let pull = PullOpts {
        to_stderr: true,
        platform: built.platform.clone(),
        ..Default::default()
    };
    if built.pull == Pull::Always {
        registry::pull(client, &built.image, &pull).await?;
    }
    let path = Query::new()
        .opt("name", built.name.as_deref())
        .path("/containers/create");
    let resp: IdResponse = match client.post(&path, Some(&built.body)).await {
        Ok(r) => r,
        Err(e)
            if e.status() == Some(404)
                && built.pull == Pull::Missing
                && e.to_string().to_lowercase().contains("image") =>
        {
            eprintln!(
                "Unable to find image '{}' locally",
                images::tagged(&built.image)
            );
            registry::pull(client, &built.image, &pull).await?;
            client.post(&path, Some(&built.body)).await?
        }
        Err(e) => return Err(e.into()),
    };
    for w in resp.warnings.unwrap_or_default() {
        eprintln!("WARNING: {w}");
    }
    Ok(resp.id)
}

fn check_tty(c: &crate::opts::ContainerOpts, streams: Streams) -> Result<(), RunError> {
    if c.tty && streams.stdin && !stdio::stdin_is_tty() {
        return Err(RunError::NotATty);
    }
    Ok(())
}

pub async fn run(client: &Client, a: RunArgs) -> Result<u8, RunError> {
    let console = if a.c.tty { stdio::term_size() } else { None };
    let built = createopts::build(&a.c, a.detach, &a.attach, console)?;
    check_tty(&a.c, built.streams)?;
    if let Some(cid) = &a.c.cidfile
        && std::path::Path::new(cid).exists()
    {
        return Err(RunError::CidFileExists(cid.clone()));
    }
    let id = create(client, &built).await?;
    write_cidfile(a.c.cidfile.as_deref(), &id)?;
    if a.detach {
        if let Err(e) = client.post_empty(&format!("/containers/{id}/start")).await {
            return Err(start_failure(e, 125));
        }
        outln!("{id}");
        return Ok(0);
    }
    let keys = detach_keys(a.detach_keys.as_deref());
    let session = Session {
        tty: a.c.tty,
        streams: built.streams,
        detach_keys: keys,
        sig_proxy: a.sig_proxy && !a.c.tty,
    };
    foreground(client, &id, &session, a.c.rm, 125).await
}

pub async fn create_cmd(client: &Client, a: CreateArgs) -> Result<u8, RunError> {
    let console = if a.c.tty { stdio::term_size() } else { None };
    let built = createopts::build(&a.c, false, &[], console)?;
    if let Some(cid) = &a.c.cidfile
        && std::path::Path::new(cid).exists()
    {
        return Err(RunError::CidFileExists(cid.clone()));
    }
    let id = create(client, &built).await?;
    write_cidfile(a.c.cidfile.as_deref(), &id)?;
    outln!("{id}");
    Ok(0)
}

fn write_cidfile(path: Option<&str>, id: &str) -> Result<(), RunError> {
    if let Some(p) = path {
        std::fs::write(p, id).map_err(|source| RunError::CidFile {
            path: p.to_string(),
            source,
        })?;
    }
    Ok(())
}

fn detach_keys(flag: Option<&str>) -> Option<Vec<u8>> {
    let keys = flag.unwrap_or("ctrl-p,ctrl-q");
    stdio::parse_detach_keys(keys).or_else(|| stdio::parse_detach_keys("ctrl-p,ctrl-q"))
}

struct Session {
    tty: bool,
    streams: Streams,
    detach_keys: Option<Vec<u8>>,
    sig_proxy: bool,
}

/// Attach, register the wait, start, then copy streams until the container's output ends;
/// the exit code is the container's.
async fn foreground(
    client: &Client,
    id: &str,
    s: &Session,
    auto_remove: bool,
    start_default: u8,
) -> Result<u8, RunError> {
    let attach_path = Query::new()
        .push("stream", "1")
        .flag("stdin", s.streams.stdin)
        .flag("stdout", s.streams.stdout)
        .flag("stderr", s.streams.stderr)
        .path(&format!("/containers/{id}/attach"));
    let wait_path = Query::new()
        .push(
            "condition",
            if auto_remove { "removed" } else { "next-exit" },
        )
        .path(&format!("/containers/{id}/wait"));
    let any = s.streams.stdin || s.streams.stdout || s.streams.stderr;
    // Both before start: the wait must be registered before the container can exit.
    let (hijacked, wait) = tokio::join!(
        async {
            if any {
                Some(client.hijack::<()>(&attach_path, None).await)
            } else {
                None
            }
        },
        client.send(Method::POST, &wait_path, crate::client::empty(), None)
    );
    // A container that will never start is not left behind when --rm asked for removal.
    let discard = || async {
        if auto_remove {
            let _ = client
                .delete_empty(&format!("/containers/{id}?force=1"))
                .await;
        }
    };
    let (hijacked, wait) = match (hijacked.transpose(), wait) {
        (Ok(h), Ok(w)) => (h, w),
        (Err(e), _) | (_, Err(e)) => {
            discard().await;
            return Err(e.into());
        }
    };
    let raw = if s.tty && s.streams.stdin && stdio::stdin_is_tty() {
        match RawMode::enter() {
            Ok(r) => Some(r),
            Err(e) => {
                discard().await;
                return Err(e.into());
            }
        }
    } else {
        None
    };
    if let Err(e) = client.post_empty(&format!("/containers/{id}/start")).await {
        drop(raw);
        discard().await;
        return Err(start_failure(e, start_default));
    }
    let _helpers = Helpers::spawn(client, id, s.tty, s.sig_proxy, false);
    let end = match hijacked {
        Some(h) => hold(h, s.tty, s.streams.stdin, s.detach_keys.clone()).await,
        None => Ok(Ended::Output),
    };
    drop(raw);
    if matches!(end?, Ended::Detached) {
        return Ok(0);
    }
    let status: WaitBody = read_json(wait).await?;
    if let Some(err) = status.error.filter(|e| !e.message.is_empty()) {
        return Err(RunError::Wait(err.message));
    }
    Ok(status.status_code as u8)
}

/// Background tasks of a foreground session, aborted when dropped.
struct Helpers(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Helpers {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

impl Helpers {
    fn spawn(client: &Client, id: &str, tty: bool, sig_proxy: bool, exec: bool) -> Helpers {
        let mut tasks = Vec::new();
        if tty {
            let c = client.clone();
            let resize = if exec {
                format!("/exec/{id}/resize")
            } else {
                format!("/containers/{id}/resize")
            };
            tasks.push(tokio::spawn(async move {
                let send = |c: Client, base: String| async move {
                    if let Some((h, w)) = stdio::term_size() {
                        let path = Query::new()
                            .push("h", h.to_string())
                            .push("w", w.to_string())
                            .path(&base);
                        let _ = c.post_empty(&path).await;
                    }
                };
                send(c.clone(), resize.clone()).await;
                let Ok(mut winch) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                else {
                    return;
                };
                while winch.recv().await.is_some() {
                    send(c.clone(), resize.clone()).await;
                }
            }));
        }
        if sig_proxy {
            use tokio::signal::unix::{SignalKind, signal};
            let sigs = [
                (SignalKind::hangup(), "HUP"),
                (SignalKind::interrupt(), "INT"),
                (SignalKind::quit(), "QUIT"),
                (SignalKind::terminate(), "TERM"),
                (SignalKind::user_defined1(), "USR1"),
                (SignalKind::user_defined2(), "USR2"),
                (SignalKind::alarm(), "ALRM"),
            ];
            for (kind, name) in sigs {
                let Ok(mut stream) = signal(kind) else {
                    continue;
                };
                let c = client.clone();
                let path = format!("/containers/{id}/kill?signal={name}");
                tasks.push(tokio::spawn(async move {
                    while stream.recv().await.is_some() {
                        let _ = c.post_empty(&path).await;
                    }
                }));
            }
        }
        Helpers(tasks)
    }
}

enum Ended {
    Output,
    Detached,
}

/// Copies the hijacked connection to stdout/stderr (and stdin to it) until output ends.
async fn hold(
    h: Hijacked,
    tty: bool,
    stdin: bool,
    detach_keys: Option<Vec<u8>>,
) -> Result<Ended, RunError> {
    let (reader, writer) = h.stream.into_split();
    let output = stdio::pump_output(reader, h.buffered, tty);
    tokio::pin!(output);
    if !stdin {
        output.await?;
        return Ok(Ended::Output);
    }
    let keys = if stdio::stdin_is_tty() {
        detach_keys
    } else {
        None
    };
    let input = stdio::pump_input(writer, stdio::stdin_reader(), keys);
    tokio::pin!(input);
    let mut input_done = false;
    loop {
        tokio::select! {
            r = &mut output => {
                r?;
                return Ok(Ended::Output);
            }
            r = &mut input, if !input_done => {
                match r {
                    Ok(InputEnd::Detached) => return Ok(Ended::Detached),
                    Ok(InputEnd::Eof) => input_done = true,
                    // The container may have closed its stdin; its output still counts.
                    Err(_) => input_done = true,
                }
            }
        }
    }
}

async fn inspect_container(client: &Client, name: &str) -> Result<Value, RunError> {
    Ok(client
        .get::<Value>(&format!("/containers/{}/json", seg(name)))
        .await?)
}

fn flag(v: &Value, path: &[&str]) -> bool {
    let mut cur = v;
    for p in path {
        match cur.get(*p) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    cur.as_bool().unwrap_or(false)
}

pub async fn start(client: &Client, a: StartArgs) -> Result<u8, RunError> {
    if a.attach || a.interactive {
        if a.containers.len() > 1 {
            return Err(RunError::AttachMany);
        }
        let info = inspect_container(client, &a.containers[0]).await?;
        let id = info
            .get("Id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let tty = flag(&info, &["Config", "Tty"]);
        let stdin = a.interactive && flag(&info, &["Config", "OpenStdin"]);
        let auto_remove = flag(&info, &["HostConfig", "AutoRemove"]);
        if tty && stdin && !stdio::stdin_is_tty() {
            return Err(RunError::NotATty);
        }
        let session = Session {
            tty,
            streams: Streams {
                stdin,
                stdout: true,
                stderr: true,
            },
            detach_keys: detach_keys(a.detach_keys.as_deref()),
            sig_proxy: !tty,
        };
        return foreground(client, &id, &session, auto_remove, 1).await;
    }
    let mut failed = Vec::new();
    for c in &a.containers {
        match client
            .post_empty(&format!("/containers/{}/start", seg(c)))
            .await
        {
            Ok(()) => outln!("{c}"),
            Err(e) => {
                eprintln!("{e}");
                failed.push(c.clone());
            }
        }
    }
    if failed.is_empty() {
        return Ok(0);
    }
    eprintln!("Error: failed to start containers: {}", failed.join(", "));
    Ok(1)
}

pub async fn attach(client: &Client, a: AttachArgs) -> Result<u8, RunError> {
    let info = inspect_container(client, &a.container).await?;
    if !flag(&info, &["State", "Running"]) {
        return Err(RunError::NotRunning);
    }
    if flag(&info, &["State", "Paused"]) {
        return Err(RunError::Paused);
    }
    let id = info
        .get("Id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let tty = flag(&info, &["Config", "Tty"]);
    let stdin = !a.no_stdin && flag(&info, &["Config", "OpenStdin"]);
    if tty && stdin && !stdio::stdin_is_tty() {
        return Err(RunError::NotATty);
    }
    let wait = client
        .send(
            Method::POST,
            &format!("/containers/{id}/wait"),
            crate::client::empty(),
            None,
        )
        .await?;
    let path = Query::new()
        .push("stream", "1")
        .flag("stdin", stdin)
        .push("stdout", "1")
        .push("stderr", "1")
        .path(&format!("/containers/{id}/attach"));
    let h = client.hijack::<()>(&path, None).await?;
    let raw = if tty && stdin && stdio::stdin_is_tty() {
        Some(RawMode::enter()?)
    } else {
        None
    };
    let _helpers = Helpers::spawn(client, &id, tty, a.sig_proxy && !tty, false);
    let end = hold(h, tty, stdin, detach_keys(a.detach_keys.as_deref())).await;
    drop(raw);
    if matches!(end?, Ended::Detached) {
        return Ok(0);
    }
    let status: WaitBody = read_json(wait).await?;
    if let Some(err) = status.error.filter(|e| !e.message.is_empty()) {
        return Err(RunError::Wait(err.message));
    }
    Ok(status.status_code as u8)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ExecInspect {
    #[serde(rename = "ExitCode")]
    exit_code: Option<i64>,
    #[serde(rename = "Running")]
    running: bool,
}

pub async fn exec(client: &Client, a: ExecArgs) -> Result<u8, RunError> {
    let (container, cmd) = match a.args.split_first() {
        Some((c, cmd)) => (c.clone(), cmd.to_vec()),
        None => return Ok(1),
    };
    let stdin = a.interactive && !a.detach;
    if a.tty && stdin && !stdio::stdin_is_tty() {
        return Err(RunError::NotATty);
    }
    let mut env = Vec::new();
    for f in &a.env_file {
        env.extend(createopts::read_env_file(f)?);
    }
    env.extend(a.env.iter().map(|e| createopts::env_value(e)));
    let config = ExecConfig {
        attach_stdin: Some(stdin),
        attach_stdout: Some(!a.detach),
        attach_stderr: Some(!a.detach),
        tty: Some(a.tty),
        console_size: if a.tty {
            stdio::term_size().map(|(h, w)| vec![h as usize, w as usize])
        } else {
            None
        },
        env: (!env.is_empty()).then_some(env),
        cmd: Some(cmd),
        privileged: a.privileged.then_some(true),
        user: a.user.clone(),
        working_dir: a.workdir.clone(),
        detach_keys: a.detach_keys.clone(),
    };
    let created: IdResponse = client
        .post(
            &format!("/containers/{}/exec", seg(&container)),
            Some(&config),
        )
        .await?;
    let exec_id = created.id;
    let start = ExecStartConfig {
        detach: Some(a.detach),
        tty: Some(a.tty),
        console_size: None,
    };
    let start_path = format!("/exec/{exec_id}/start");
    if a.detach {
        let body = crate::client::json_body(&start)?;
        let resp = client
            .send(Method::POST, &start_path, body, Some("application/json"))
            .await
            .map_err(|e| start_failure(e, 126))?;
        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
        return Ok(0);
    }
    let h = client
        .hijack(&start_path, Some(&start))
        .await
        .map_err(|e| start_failure(e, 126))?;
    let raw = if a.tty && stdin && stdio::stdin_is_tty() {
        Some(RawMode::enter()?)
    } else {
        None
    };
    let _helpers = Helpers::spawn(client, &exec_id, a.tty, false, true);
    let end = hold(h, a.tty, stdin, detach_keys(a.detach_keys.as_deref())).await;
    drop(raw);
    if matches!(end?, Ended::Detached) {
        return Ok(0);
    }
    // The stream can end a moment before the daemon records the exit code.
    for _ in 0..100 {
        let info: ExecInspect = client.get(&format!("/exec/{exec_id}/json")).await?;
        if !info.running {
            return Ok(info.exit_code.unwrap_or(0) as u8);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(0)
}
