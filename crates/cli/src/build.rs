//! `wharf build` and `wharf commit`.
//!
//! A directory context on this machine is read by the daemon in place (`wharfcontextdir`):
//! nothing is copied, so an unchanged context costs a walk of its file times. A tar on stdin,
//! a lone Dockerfile on stdin, or a Dockerfile from outside the context go as a tar body
//! (the daemon applies `.dockerignore` either way). Progress is drawn in BuildKit's plain
//! style on stderr: `#N [stage k/m] STEP`, output lines with their time, `#N CACHED`,
//! `#N DONE 0.1s`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use base64::Engine as _;
use http_body_util::BodyExt;
use hyper::Method;
use hyper::body::Incoming;
use serde_json::Value;

use crate::client::{self, Client, ClientError, Query};
use crate::opts::{BuildArgs, CommitArgs};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("reading the daemon's answer")]
    Body(#[from] hyper::Error),
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl BuildError {
    pub fn exit_code(&self) -> u8 {
        1
    }
}

type Result<T> = std::result::Result<T, BuildError>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let what = what.into();
    move |source| BuildError::Io { what, source }
}

fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("linux/{arch}")
}

/// `--secret id=x[,src=path|,env=VAR]` → (id, content).
fn secret(spec: &str) -> Result<(String, Vec<u8>)> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => src = Some(v.to_string()),
            Some(("env", v)) => env = Some(v.to_string()),
            Some(("type", "file" | "env")) => {}
            _ => {
                return Err(BuildError::Invalid(format!(
                    "invalid secret {spec:?}: expected id=NAME[,src=PATH|,env=VAR]"
                )));
            }
        }
    }
    let id = id
        .or_else(|| {
            src.as_ref().and_then(|s| {
                Path::new(s)
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
            })
        })
        .ok_or_else(|| BuildError::Invalid(format!("invalid secret {spec:?}: no id")))?;
    if let Some(var) = env {
        let v = std::env::var(&var).map_err(|_| {
            BuildError::Invalid(format!(
                "secret {id}: environment variable {var} is not set"
            ))
        })?;
        return Ok((id, v.into_bytes()));
    }
    let src = match src {
        Some(s) => s,
        None => match std::env::var(&id) {
            Ok(v) => return Ok((id, v.into_bytes())),
            Err(_) => id.clone(),
        },
    };
    let content = std::fs::read(&src).map_err(io(format!("reading secret {id} from {src}")))?;
    Ok((id, content))
}

/// Whether the bytes start like a tar (plain or compressed).
fn looks_like_tar(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.starts_with(b"BZh")
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || (head.len() >= 262 && &head[257..262] == b"ustar")
}

/// A tar holding one file, for a Dockerfile sent without a context.
fn one_file_tar(name: &str, content: &[u8]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, content)
        .map_err(io("making the context tar"))?;
    b.into_inner().map_err(io("making the context tar"))
}

/// A tar of the directory `dir`, plus (optionally) a Dockerfile under `extra`.
fn dir_tar(dir: &Path, extra: Option<(&str, &[u8])>) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir)
        .map_err(io(format!("reading the context {}", dir.display())))?;
    if let Some((name, content)) = extra {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, content)
            .map_err(io("making the context tar"))?;
    }
    b.into_inner().map_err(io("making the context tar"))
}

/// Draws the daemon's build progress; returns the image id.
struct Progress {
    quiet: bool,
    start: Instant,
    step_start: HashMap<u64, Instant>,
    id: Option<String>,
}

impl Progress {
    fn line(&self, s: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr(), "{s}");
        }
    }

    fn handle(&mut self, v: &Value) -> Result<()> {
        if let Some(msg) = v
            .get("errorDetail")
            .and_then(|d| d.get("message"))
            .and_then(Value::as_str)
            .or_else(|| v.get("error").and_then(Value::as_str))
        {
            return Err(BuildError::Failed(msg.to_string()));
        }
        if let Some(id) = v
            .get("aux")
            .and_then(|a| a.get("ID"))
            .and_then(Value::as_str)
        {
            self.id = Some(id.to_string());
            return Ok(());
        }
        if let Some(s) = v.get("stream").and_then(Value::as_str) {
            if !self.quiet {
                let _ = std::io::stderr().write_all(s.as_bytes());
            }
            return Ok(());
        }
        let Some(w) = v.get("wharf") else {
            return Ok(());
        };
        let num = |k: &str| w.get(k).and_then(Value::as_u64);
        if let Some(n) = num("step") {
            self.step_start.insert(n, Instant::now());
            let stage = w.get("stage").and_then(Value::as_str).unwrap_or_default();
            let text = w.get("text").and_then(Value::as_str).unwrap_or_default();
            self.line(&format!(
                "#{n} [{stage} {}/{}] {text}",
                num("stage_step").unwrap_or(0),
                num("stage_steps").unwrap_or(0)
            ));
        } else if let Some(n) = num("cached") {
            self.line(&format!("#{n} CACHED"));
        } else if let Some(n) = num("output") {
            let t = self
                .step_start
                .get(&n)
                .map_or(0.0, |s| s.elapsed().as_secs_f64());
            let text = w.get("text").and_then(Value::as_str).unwrap_or_default();
            for l in text.trim_end_matches('\n').split('\n') {
                self.line(&format!("#{n} {t:.3} {l}"));
            }
        } else if let Some(n) = num("done") {
            let ms = num("ms").unwrap_or(0);
            self.line(&format!("#{n} DONE {:.1}s", ms as f64 / 1000.0));
        } else if let Some(t) = w.get("note").and_then(Value::as_str) {
            self.line(&format!("#0 {t}"));
        }
        Ok(())
    }

    async fn read(&mut self, mut body: Incoming) -> Result<()> {
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let frame = body.frame().await;
            let done = frame.is_none();
            if let Some(f) = frame
                && let Ok(data) = f?.into_data()
            {
                buf.extend_from_slice(&data);
            }
            let mut consumed = 0;
            {
                let mut stream = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
                while let Some(Ok(v)) = stream.next() {
                    consumed = stream.byte_offset();
                    self.handle(&v)?;
                }
            }
            buf.drain(..consumed);
            if done {
                return Ok(());
            }
        }
    }
}

pub async fn build(client: &Client, a: BuildArgs) -> Result<u8> {
    if let Some(p) = &a.platform {
        let host = host_platform();
        if p.split(',').any(|one| one.trim() != host) {
            return Err(BuildError::Invalid(format!(
                "platform {p} is not supported: wharf builds only for this machine's platform ({host})"
            )));
        }
    }
    if let Some(n) = &a.network
        && !matches!(n.as_str(), "default" | "host" | "none" | "bridge")
    {
        return Err(BuildError::Invalid(format!(
            "network mode {n:?} is not supported for builds (default, host or none)"
        )));
    }
    let mut build_args: HashMap<String, Option<String>> = HashMap::new();
    for b in &a.build_args {
        match b.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_string(), Some(v.to_string()));
            }
            // `--build-arg NAME` takes the value from the environment, as docker does.
            None => {
                if let Ok(v) = std::env::var(b) {
                    build_args.insert(b.clone(), Some(v));
                }
            }
        }
    }
    if !build_args.contains_key("SOURCE_DATE_EPOCH")
        && let Ok(e) = std::env::var("SOURCE_DATE_EPOCH")
    {
        build_args.insert("SOURCE_DATE_EPOCH".into(), Some(e));
    }
    let mut labels = HashMap::new();
    for l in &a.labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let mut secrets = HashMap::new();
    for s in &a.secrets {
        let (id, content) = secret(s)?;
        secrets.insert(
            id,
            base64::engine::general_purpose::STANDARD.encode(content),
        );
    }
    for t in &a.tags {
        if t.chars().any(|c| c.is_ascii_uppercase()) && !t.contains('@') {
            let repo = t.rsplit_once(':').map_or(t.as_str(), |(r, tag)| {
                if tag.contains('/') { t.as_str() } else { r }
            });
            if repo.chars().any(|c| c.is_ascii_uppercase()) {
                return Err(BuildError::Invalid(format!(
                    "invalid reference format: repository name ({repo}) must be lowercase"
                )));
            }
        }
    }

    // The context and the Dockerfile.
    let stdin_dockerfile = a.file.as_deref() == Some("-");
    let mut dockerfile_name = None;
    let mut context_dir = None;
    let body_bytes: Option<Vec<u8>>;
    let mut stdin_body = None;
    if a.context == "-" {
        if stdin_dockerfile {
            return Err(BuildError::Invalid(
                "invalid argument: can't use stdin for both build context and dockerfile".into(),
            ));
        }
        let mut stdin = std::io::stdin();
        let mut head = vec![0u8; 512];
        let mut n = 0;
        while n < head.len() {
            let k = stdin.read(&mut head[n..]).map_err(io("reading stdin"))?;
            if k == 0 {
                break;
            }
            n += k;
        }
        head.truncate(n);
        if looks_like_tar(&head) {
            stdin_body = Some(head);
            dockerfile_name = a.file.clone();
            body_bytes = None;
        } else {
            let mut text = head;
            stdin.read_to_end(&mut text).map_err(io("reading stdin"))?;
            body_bytes = Some(one_file_tar("Dockerfile", &text)?);
            dockerfile_name = Some("Dockerfile".into());
        }
    } else {
        let dir = PathBuf::from(&a.context);
        if !dir.is_dir() {
            return Err(BuildError::Invalid(format!(
                "unable to prepare context: path {:?} not found",
                a.context
            )));
        }
        let dir = std::fs::canonicalize(&dir).map_err(io(format!("resolving {}", a.context)))?;
        match a.file.as_deref() {
            None => {
                context_dir = Some(dir);
                body_bytes = None;
            }
            Some("-") => {
                let mut text = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut text)
                    .map_err(io("reading the Dockerfile from stdin"))?;
                let name = ".wharf-dockerfile-stdin";
                body_bytes = Some(dir_tar(&dir, Some((name, &text)))?);
                dockerfile_name = Some(name.into());
            }
            Some(f) => {
                let fp = std::fs::canonicalize(f)
                    .map_err(io(format!("unable to find the Dockerfile {f}")))?;
                match fp.strip_prefix(&dir) {
                    Ok(rel) => {
                        context_dir = Some(dir.clone());
                        dockerfile_name = Some(rel.to_string_lossy().to_string());
                        body_bytes = None;
                    }
                    Err(_) => {
                        let text = std::fs::read(&fp).map_err(io(format!("reading {f}")))?;
                        let name = ".wharf-dockerfile-outside";
                        body_bytes = Some(dir_tar(&dir, Some((name, &text)))?);
                        dockerfile_name = Some(name.into());
                    }
                }
            }
        }
    }

    let mut q = Query::new();
    for t in &a.tags {
        q = q.push("t", t);
    }
    q = q
        .opt("dockerfile", dockerfile_name.as_deref())
        .opt("target", a.target.as_deref())
        .flag("nocache", a.no_cache)
        .flag("pull", a.pull)
        .flag("q", a.quiet)
        .opt("networkmode", a.network.as_deref())
        .opt("platform", a.platform.as_deref())
        .push("wharfprogress", "1");
    if !build_args.is_empty() {
        q = q.push(
            "buildargs",
            serde_json::to_string(&build_args).unwrap_or_default(),
        );
    }
    if !labels.is_empty() {
        q = q.push("labels", serde_json::to_string(&labels).unwrap_or_default());
    }
    if let Some(d) = &context_dir {
        q = q.push("wharfcontextdir", d.to_string_lossy());
    }
    let mut headers = Vec::new();
    if !secrets.is_empty() {
        let json = serde_json::to_vec(&secrets).unwrap_or_default();
        headers.push((
            "X-Wharf-Build-Secrets",
            base64::engine::general_purpose::STANDARD.encode(json),
        ));
    }
    let body = match (body_bytes, stdin_body) {
        (Some(b), _) => client::reader_body(std::io::Cursor::new(b)),
        (None, Some(head)) => {
            client::reader_body(std::io::Cursor::new(head).chain(std::io::stdin()))
        }
        (None, None) => client::empty(),
    };
    let mut progress = Progress {
        quiet: a.quiet,
        start: Instant::now(),
        step_start: HashMap::new(),
        id: None,
    };
    let resp = client
        .send_with(
            Method::POST,
            &q.path("/build"),
            body,
            Some("application/x-tar"),
            &headers,
        )
        .await?;
    let r = progress.read(resp.into_body()).await;
    if let Err(e) = r {
        if !a.quiet {
            let _ = writeln!(std::io::stderr(), "ERROR: {e}");
            return Ok(1);
        }
        return Err(e);
    }
    let Some(id) = progress.id.clone() else {
        return Err(BuildError::Failed("the daemon sent no image id".into()));
    };
    if !a.quiet {
        progress.line(&format!("writing image {id} done"));
        for t in &a.tags {
            progress.line(&format!("naming to {t} done"));
        }
        progress.line(&format!(
            "built in {:.1}s",
            progress.start.elapsed().as_secs_f64()
        ));
    } else {
        outln!("{id}");
    }
    if let Some(f) = &a.iidfile {
        std::fs::write(f, &id).map_err(io(format!("writing {f}")))?;
    }
    Ok(0)
}

pub async fn commit(client: &Client, a: CommitArgs) -> Result<u8> {
    let mut q = Query::new()
        .push("container", &a.container)
        .opt("author", a.author.as_deref())
        .opt("comment", a.message.as_deref())
        .flag("pause", a.pause);
    if let Some(r) = &a.reference {
        let (repo, tag) = match r.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (r.as_str(), None),
        };
        q = q.push("repo", repo).opt("tag", tag);
    }
    for c in &a.change {
        q = q.push("changes", c);
    }
    let resp = client
        .send(Method::POST, &q.path("/commit"), client::empty(), None)
        .await?;
    let v: Value = client::read_json(resp).await?;
    let id = v.get("Id").and_then(Value::as_str).unwrap_or_default();
    outln!("{id}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_tar_detection() {
        let dir = std::env::temp_dir().join(format!("wharf-cli-secret-{}", std::process::id()));
        std::fs::write(&dir, "s3cret").unwrap();
        let (id, c) = secret(&format!("id=tok,src={}", dir.display())).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!((id.as_str(), c.as_slice()), ("tok", b"s3cret".as_slice()));
        assert!(secret("bogus").is_err());
        let t = one_file_tar("Dockerfile", b"FROM x\n").unwrap();
        assert!(looks_like_tar(&t));
        assert!(!looks_like_tar(b"FROM busybox\n"));
    }
}
