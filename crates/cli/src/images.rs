//! Image verbs: `images`, `import`, `load`, `save`, `tag`, `rmi`, `history`, `pull`,
//! `image prune`, and the JSON message streams the daemon answers some of them with.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;
use hyper::body::Incoming;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::client::{self, Client, ClientError, Query, seg};
use crate::format::{self, FormatError, Printer};
use crate::opts::{
    HistoryArgs, ImagePruneArgs, ImagesArgs, ImportArgs, LoadArgs, RmiArgs, SaveArgs, TagArgs,
};
use crate::progress::{self, ProgressError};
use crate::stdio;
use crate::units;

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Stream(#[from] ProgressError),
    #[error("reading the daemon's answer")]
    Body(#[from] hyper::Error),
    #[error("open {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cowardly refusing to save to a terminal. Use the -o flag or redirect")]
    SaveToTerminal,
    #[error("requested load from stdin, but stdin is empty")]
    LoadFromTerminal,
    #[error("bad format of filter (expected name=value): {0}")]
    Filter(String),
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    Uppercase(String),
    #[error("refusing to create a tag with a digest reference")]
    DigestTag,
}

impl ImagesError {
    pub fn exit_code(&self) -> u8 {
        1
    }
}

type Result<T> = std::result::Result<T, ImagesError>;

/// `-f k=v` flags as the daemon's `filters` JSON: `{"k": {"v": true}}`.
pub fn filters_json(pairs: &[(String, String)]) -> Option<String> {
    if pairs.is_empty() {
        return None;
    }
    let mut m = serde_json::Map::new();
    for (k, v) in pairs {
        let entry = m
            .entry(k.clone())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Value::Object(o) = entry {
            o.insert(v.clone(), Value::Bool(true));
        }
    }
    Some(Value::Object(m).to_string())
}

pub fn parse_filters(flags: &[String]) -> Result<Vec<(String, String)>> {
    flags
        .iter()
        .map(|f| match f.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.trim().to_ascii_lowercase(), v.to_string())),
            _ => Err(ImagesError::Filter(f.clone())),
        })
        .collect()
}

/// The reference with `:latest` when it names no tag or digest.
pub fn tagged(image: &str) -> String {
    let (name, tag, digest) = format::split_ref(image);
    match (tag, digest) {
        (_, Some(d)) => format!("{name}@{d}"),
        (Some(t), None) => format!("{name}:{t}"),
        (None, None) => format!("{name}:latest"),
    }
}

/// Prints a JSON message stream (pull, import, load) as docker does on a non-terminal;
/// an `error` message fails the command.
async fn show_messages(body: Incoming, to_stderr: bool, quiet: bool) -> Result<()> {
    progress::messages(body, |v| {
        if let Some(err) = progress::error_of(v) {
            return Err(ProgressError::Failed(err));
        }
        if quiet {
            return Ok(());
        }
        let text = if let Some(s) = v.get("stream").and_then(Value::as_str) {
            s.to_string()
        } else if let Some(status) = v.get("status").and_then(Value::as_str) {
            // Progress bars are for terminals; lines without them are kept.
            if v.get("progressDetail")
                .and_then(|p| p.get("current"))
                .is_some()
            {
                return Ok(());
            }
            match v.get("id").and_then(Value::as_str) {
                Some(id) if !id.is_empty() => format!("{id}: {status}\n"),
                _ => format!("{status}\n"),
            }
        } else {
            return Ok(());
        };
        if to_stderr {
            std::io::stderr()
                .write_all(text.as_bytes())
                .map_err(|e| ProgressError::Write("stderr", e))
        } else {
            stdio::write_stdout(text.as_bytes());
            Ok(())
        }
    })
    .await?;
    Ok(())
}

pub async fn list(client: &Client, a: ImagesArgs) -> Result<u8> {
    let mut filters = parse_filters(&a.filter)?;
    if let Some(r) = &a.reference {
        filters.push(("reference".into(), r.clone()));
    }
    let path = Query::new()
        .flag("all", a.all)
        .opt("filters", filters_json(&filters))
        .path("/images/json");
    let images: Vec<Value> = client
        .get::<Option<Vec<Value>>>(&path)
        .await?
        .unwrap_or_default();
    let table = if a.digests {
        format::IMAGES_TABLE_DIGESTS
    } else {
        format::IMAGES_TABLE
    };
    let printer = Printer::new(a.format.as_deref(), table, a.quiet)?;
    let trunc = !a.no_trunc;
    let rows: Vec<format::Row> = images
        .iter()
        .flat_map(|img| {
            format::image_rows(
                img,
                trunc,
                a.digests || a.format.as_deref().is_some_and(|f| f.contains(".Digest")),
            )
        })
        .collect();
    out!("{}", printer.render(&format::images_headers(), &rows)?);
    Ok(0)
}

pub async fn import(client: &Client, a: ImportArgs) -> Result<u8> {
    let (src, body) = if a.source == "-" {
        ("-".to_string(), client::reader_body(std::io::stdin()))
    } else if a.source.contains("://") {
        (a.source.clone(), client::empty())
    } else {
        let f = std::fs::File::open(&a.source).map_err(|source| ImagesError::Open {
            path: a.source.clone(),
            source,
        })?;
        ("-".to_string(), client::reader_body(f))
    };
    if let Some(r) = &a.reference {
        check_lowercase(r)?;
    }
    let mut q = Query::new()
        .push("fromSrc", &src)
        .opt("repo", a.reference.as_deref())
        .opt("message", a.message.as_deref())
        .opt("platform", a.platform.as_deref());
    for c in &a.change {
        q = q.push("changes", c);
    }
    let resp = client
        .send(
            Method::POST,
            &q.path("/images/create"),
            body,
            Some("application/x-tar"),
        )
        .await?;
    show_messages(resp.into_body(), false, false).await?;
    Ok(0)
}

/// Forwards written bytes to a request body in chunks.
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 * 1024;

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the daemon stopped reading")
        })
    }
}

/// Tars a directory (an OCI layout) on a thread, as the request body.
fn tar_dir_body(dir: PathBuf) -> client::Body {
    let (tx, rx) = mpsc::channel(8);
    std::thread::spawn(move || {
        let writer = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let mut builder = tar::Builder::new(writer);
        builder.follow_symlinks(false);
        let res = append_tree(&mut builder, &dir, Path::new(""))
            .and_then(|_| builder.into_inner())
            .and_then(|mut w| w.flush());
        if let Err(e) = res {
            let _ = tx.blocking_send(Err(e));
        }
    });
    client::channel_body(rx)
}

fn append_tree<W: Write>(b: &mut tar::Builder<W>, root: &Path, rel: &Path) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let rel_path = rel.join(e.file_name());
        let full = e.path();
        b.append_path_with_name(&full, &rel_path)?;
        if e.file_type()?.is_dir() {
            append_tree(b, root, &rel_path)?;
        }
    }
    Ok(())
}

pub async fn load(client: &Client, a: LoadArgs) -> Result<u8> {
    let body = match &a.input {
        None => {
            if stdio::stdin_is_tty() {
                return Err(ImagesError::LoadFromTerminal);
            }
            client::reader_body(std::io::stdin())
        }
        Some(p) => {
            let meta = std::fs::metadata(p).map_err(|source| ImagesError::Open {
                path: p.clone(),
                source,
            })?;
            if meta.is_dir() {
                tar_dir_body(PathBuf::from(p))
            } else {
                let f = std::fs::File::open(p).map_err(|source| ImagesError::Open {
                    path: p.clone(),
                    source,
                })?;
                client::reader_body(f)
            }
        }
    };
    let path = Query::new().flag("quiet", a.quiet).path("/images/load");
    let resp = client
        .send(Method::POST, &path, body, Some("application/x-tar"))
        .await?;
    show_messages(resp.into_body(), false, false).await?;
    Ok(0)
}

pub async fn save(client: &Client, a: SaveArgs) -> Result<u8> {
    if a.output.is_none() && stdio::stdout_is_tty() {
        return Err(ImagesError::SaveToTerminal);
    }
    let mut q = Query::new();
    for i in &a.images {
        q = q.push("names", i);
    }
    let resp = client
        .send(Method::GET, &q.path("/images/get"), client::empty(), None)
        .await?;
    let mut body = resp.into_body();
    match &a.output {
        None => {
            let mut out = std::io::stdout().lock();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    out.write_all(&data).map_err(|source| ImagesError::Write {
                        path: "stdout".into(),
                        source,
                    })?;
                }
            }
            out.flush().map_err(|source| ImagesError::Write {
                path: "stdout".into(),
                source,
            })?;
        }
        Some(path) => {
            // A temp file beside the target, renamed at the end: no half-written archive.
            let target = PathBuf::from(path);
            let dir = target
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let name = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = dir.join(format!(".{name}.wharf-{}", std::process::id()));
            let werr = |source| ImagesError::Write {
                path: path.clone(),
                source,
            };
            let result: Result<()> = async {
                let mut f = std::fs::File::create(&tmp).map_err(werr)?;
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame?.into_data() {
                        f.write_all(&data).map_err(werr)?;
                    }
                }
                f.sync_all().map_err(werr)?;
                std::fs::rename(&tmp, &target).map_err(werr)?;
                Ok(())
            }
            .await;
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result?;
        }
    }
    Ok(0)
}

fn check_lowercase(r: &str) -> Result<()> {
    let (name, _, _) = format::split_ref(r);
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(ImagesError::Uppercase(name));
    }
    Ok(())
}

pub async fn tag(client: &Client, a: TagArgs) -> Result<u8> {
    let (name, tag, digest) = format::split_ref(&a.target);
    if digest.is_some() {
        return Err(ImagesError::DigestTag);
    }
    check_lowercase(&a.target)?;
    let path = Query::new()
        .push("repo", format::familiar(&name))
        .push("tag", tag.unwrap_or_else(|| "latest".into()))
        .path(&format!("/images/{}/tag", seg(&a.source)));
    client.post_empty(&path).await?;
    Ok(0)
}

pub async fn rmi(client: &Client, a: RmiArgs) -> Result<u8> {
    let mut failed = false;
    for img in &a.images {
        let path = Query::new()
            .flag("force", a.force)
            .flag("noprune", a.no_prune)
            .path(&format!("/images/{}", seg(img)));
        match client.delete::<Option<Vec<Value>>>(&path).await {
            Ok(items) => {
                for it in items.unwrap_or_default() {
                    if let Some(u) = it.get("Untagged").and_then(Value::as_str) {
                        outln!("Untagged: {u}");
                    }
                    if let Some(d) = it.get("Deleted").and_then(Value::as_str) {
                        outln!("Deleted: {d}");
                    }
                }
            }
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

pub async fn history(client: &Client, a: HistoryArgs) -> Result<u8> {
    let items: Vec<Value> = client
        .get::<Option<Vec<Value>>>(&format!("/images/{}/history", seg(&a.image)))
        .await?
        .unwrap_or_default();
    let printer = Printer::new(a.format.as_deref(), format::HISTORY_TABLE, a.quiet)?;
    let rows: Vec<format::Row> = items
        .iter()
        .map(|h| format::history_row(h, !a.no_trunc, a.human))
        .collect();
    out!(
        "{}",
        printer.render(&format::history_headers(a.human), &rows)?
    );
    Ok(0)
}

/// Asks "[y/N]" on stderr-free stdout like docker; anything but y/yes declines.
pub fn confirm(warning: &str) -> bool {
    out!("{warning}\nAre you sure you want to continue? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

pub async fn prune(client: &Client, a: ImagePruneArgs) -> Result<u8> {
    let warning = if a.all {
        "WARNING! This will remove all images without at least one container associated to them."
    } else {
        "WARNING! This will remove all dangling images."
    };
    if !a.force && !confirm(warning) {
        return Ok(0);
    }
    let mut filters = parse_filters(&a.filter)?;
    filters.push(("dangling".into(), (!a.all).to_string()));
    let path = Query::new()
        .opt("filters", filters_json(&filters))
        .path("/images/prune");
    let report: Value = client.post::<Value, ()>(&path, None).await?;
    let deleted = report
        .get("ImagesDeleted")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !deleted.is_empty() {
        outln!("Deleted Images:");
        for d in &deleted {
            if let Some(u) = d.get("Untagged").and_then(Value::as_str) {
                outln!("untagged: {u}");
            } else if let Some(x) = d.get("Deleted").and_then(Value::as_str) {
                outln!("deleted: {x}");
            }
        }
        outln!();
    }
    let space = report
        .get("SpaceReclaimed")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    outln!("Total reclaimed space: {}", units::human_size(space));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let f =
            parse_filters(&["dangling=true".into(), "label=a=b".into(), "label=c".into()]).unwrap();
        assert_eq!(
            filters_json(&f).unwrap(),
            r#"{"dangling":{"true":true},"label":{"a=b":true,"c":true}}"#
        );
        assert!(parse_filters(&["nonsense".into()]).is_err());
        assert_eq!(filters_json(&[]), None);
    }

    #[test]
    fn references() {
        assert_eq!(tagged("busybox"), "busybox:latest");
        assert_eq!(tagged("busybox:1"), "busybox:1");
        assert_eq!(tagged("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(tagged("x@sha256:00"), "x@sha256:00");
        assert!(check_lowercase("Busybox:Latest").is_err());
        assert!(check_lowercase("busybox:Latest").is_ok());
    }

    #[test]
    fn tars_a_directory_tree() {
        let dir = std::env::temp_dir().join(format!("wharf-cli-tar-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), b"{}").unwrap();
        std::fs::write(dir.join("blobs/sha256/abc"), b"data").unwrap();
        let mut b = tar::Builder::new(Vec::new());
        append_tree(&mut b, &dir, Path::new("")).unwrap();
        let bytes = b.into_inner().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let mut ar = tar::Archive::new(bytes.as_slice());
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["blobs", "blobs/sha256", "blobs/sha256/abc", "oci-layout"]
        );
    }
}
