//! Container verbs that are plain requests: `ps`, `stop`, `kill`, `restart`, `rm`, `wait`,
//! `pause`, `unpause`, `rename`, `top`, `stats`, `container prune`, `logs`, and `inspect`
//! (containers and images).

use hyper::Method;
use serde_json::Value;

use crate::client::{self, Client, ClientError, Query, seg};
use crate::format::{self, FormatError, Printer};
use crate::images::{self, ImagesError};
use crate::opts::{
    ContainersArgs, InspectArgs, KillArgs, LogsArgs, PruneArgs, PsArgs, RenameArgs, RmArgs,
    StatsArgs, StopArgs, TopArgs,
};
use crate::stdio::{self, StdioError};
use crate::tabwriter;
use crate::template::{Template, TemplateError, unescape_format};
use crate::units;

#[derive(Debug, thiserror::Error)]
pub enum ContainersError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Images(#[from] ImagesError),
    #[error(transparent)]
    Stdio(#[from] StdioError),
    #[error(transparent)]
    Units(#[from] units::UnitsError),
    #[error("reading the daemon's answer")]
    Body(#[from] hyper::Error),
    #[error("{0}")]
    Failed(String),
}

impl ContainersError {
    pub fn exit_code(&self) -> u8 {
        1
    }
}

type Result<T> = std::result::Result<T, ContainersError>;

pub async fn ps(client: &Client, a: PsArgs) -> Result<u8> {
    let filters = images::parse_filters(&a.filter)?;
    let wants_size = a.size || a.format.as_deref().is_some_and(|f| f.contains(".Size"));
    let limit = if a.latest { 1 } else { a.last };
    let path = Query::new()
        .flag("all", a.all || limit > 0)
        .opt("limit", (limit > 0).then(|| limit.to_string()))
        .flag("size", wants_size)
        .opt("filters", images::filters_json(&filters))
        .path("/containers/json");
    let list: Vec<Value> = client
        .get::<Option<Vec<Value>>>(&path)
        .await?
        .unwrap_or_default();
    let table = if a.size {
        format::PS_TABLE_SIZE
    } else {
        format::PS_TABLE
    };
    let printer = Printer::new(a.format.as_deref(), table, a.quiet)?;
    let rows: Vec<format::Row> = list
        .iter()
        .map(|c| format::ps_row(c, !a.no_trunc))
        .collect();
    out!("{}", printer.render(&format::ps_headers(), &rows)?);
    Ok(0)
}

/// Runs one request per container; prints the name on success, the error otherwise.
async fn each(
    client: &Client,
    names: &[String],
    method: Method,
    path: impl Fn(&str) -> String,
) -> Result<u8> {
    let mut failed = false;
    for n in names {
        let res = client
            .send(method.clone(), &path(&seg(n)), client::empty(), None)
            .await;
        match res {
            Ok(resp) => {
                http_body_util::BodyExt::collect(resp.into_body()).await?;
                outln!("{n}");
            }
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

pub async fn stop(client: &Client, a: StopArgs, restart: bool) -> Result<u8> {
    let verb = if restart { "restart" } else { "stop" };
    each(client, &a.containers, Method::POST, |c| {
        Query::new()
            .opt("t", a.time.map(|t| t.to_string()))
            .opt("signal", a.signal.as_deref())
            .path(&format!("/containers/{c}/{verb}"))
    })
    .await
}

pub async fn kill(client: &Client, a: KillArgs) -> Result<u8> {
    each(client, &a.containers, Method::POST, |c| {
        Query::new()
            .opt("signal", a.signal.as_deref())
            .path(&format!("/containers/{c}/kill"))
    })
    .await
}

pub async fn rm(client: &Client, a: RmArgs) -> Result<u8> {
    each(client, &a.containers, Method::DELETE, |c| {
        Query::new()
            .flag("force", a.force)
            .flag("v", a.volumes)
            .flag("link", a.link)
            .path(&format!("/containers/{c}"))
    })
    .await
}

pub async fn pause(client: &Client, a: ContainersArgs, pause: bool) -> Result<u8> {
    let verb = if pause { "pause" } else { "unpause" };
    each(client, &a.containers, Method::POST, |c| {
        format!("/containers/{c}/{verb}")
    })
    .await
}

pub async fn wait(client: &Client, a: ContainersArgs) -> Result<u8> {
    let mut failed = false;
    for c in &a.containers {
        match client
            .post::<Value, ()>(&format!("/containers/{}/wait", seg(c)), None)
            .await
        {
            Ok(v) => outln!(
                "{}",
                v.get("StatusCode").and_then(Value::as_i64).unwrap_or(0)
            ),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

pub async fn rename(client: &Client, a: RenameArgs) -> Result<u8> {
    let path = Query::new()
        .push("name", &a.new_name)
        .path(&format!("/containers/{}/rename", seg(&a.container)));
    client.post_empty(&path).await?;
    Ok(0)
}

pub async fn top(client: &Client, a: TopArgs) -> Result<u8> {
    let path = Query::new()
        .opt(
            "ps_args",
            (!a.ps_args.is_empty()).then(|| a.ps_args.join(" ")),
        )
        .path(&format!("/containers/{}/top", seg(&a.container)));
    let v: Value = client.get(&path).await?;
    let mut text = String::new();
    let strs = |row: &Value| -> Vec<String> {
        row.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    text.push_str(&strs(v.get("Titles").unwrap_or(&Value::Null)).join("\t"));
    text.push('\n');
    for p in v
        .get("Processes")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        text.push_str(&strs(p).join("\t"));
        text.push('\n');
    }
    out!("{}", tabwriter::layout(&text, 20, 3));
    Ok(0)
}

pub async fn stats(client: &Client, a: StatsArgs) -> Result<u8> {
    let printer = Printer::new(a.format.as_deref(), format::STATS_TABLE, false)?;
    loop {
        let names: Vec<String> = if a.containers.is_empty() {
            let path = Query::new().flag("all", a.all).path("/containers/json");
            let list: Vec<Value> = client
                .get::<Option<Vec<Value>>>(&path)
                .await?
                .unwrap_or_default();
            list.iter()
                .filter_map(|c| c.get("Id").and_then(Value::as_str).map(str::to_string))
                .collect()
        } else {
            a.containers.clone()
        };
        let fetches = names.iter().map(|n| {
            let path = format!("/containers/{}/stats?stream=0", seg(n));
            async move { (n.clone(), client.get::<Value>(&path).await) }
        });
        let results = futures_util::future::join_all(fetches).await;
        let mut rows = Vec::new();
        for (name, r) in results {
            match r {
                Ok(st) => {
                    let short = if a.no_trunc {
                        name.clone()
                    } else {
                        name.chars().take(12).collect()
                    };
                    rows.push(format::stats_row(
                        if a.containers.is_empty() {
                            &short
                        } else {
                            &name
                        },
                        &st,
                        !a.no_trunc,
                    ));
                }
                Err(e) if !a.containers.is_empty() => return Err(e.into()),
                Err(_) => {}
            }
        }
        let out = printer.render(&format::stats_headers(), &rows)?;
        if a.no_stream {
            out!("{out}");
            return Ok(0);
        }
        // Redraw in place, like docker's live view.
        out!("\x1b[2J\x1b[H{out}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

pub async fn prune(client: &Client, a: PruneArgs) -> Result<u8> {
    if !a.force && !images::confirm("WARNING! This will remove all stopped containers.") {
        return Ok(0);
    }
    let filters = images::parse_filters(&a.filter)?;
    let path = Query::new()
        .opt("filters", images::filters_json(&filters))
        .path("/containers/prune");
    let report: Value = client.post::<Value, ()>(&path, None).await?;
    let deleted = report
        .get("ContainersDeleted")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !deleted.is_empty() {
        outln!("Deleted Containers:");
        for d in &deleted {
            outln!("{}", d.as_str().unwrap_or_default());
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

pub async fn logs(client: &Client, a: LogsArgs) -> Result<u8> {
    let now = chrono::Utc::now();
    let since = a
        .since
        .as_deref()
        .map(|s| units::api_timestamp(s, now))
        .transpose()?;
    let until = a
        .until
        .as_deref()
        .map(|s| units::api_timestamp(s, now))
        .transpose()?;
    let name = seg(&a.container);
    let path = Query::new()
        .push("stdout", "1")
        .push("stderr", "1")
        .flag("follow", a.follow)
        .opt("tail", a.tail.as_deref())
        .flag("timestamps", a.timestamps)
        .flag("details", a.details)
        .opt("since", since)
        .opt("until", until)
        .path(&format!("/containers/{name}/logs"));
    // The tty setting decides the framing; fetch it alongside, costing no extra wait.
    let info_path = format!("/containers/{name}/json");
    let (info, resp) = tokio::join!(
        client.get::<Value>(&info_path),
        client.send(Method::GET, &path, client::empty(), None)
    );
    let resp = resp?;
    let content_type = resp
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let tty = if content_type.contains("multiplexed-stream") {
        false
    } else {
        info?
            .get("Config")
            .and_then(|c| c.get("Tty"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let mut body = resp.into_body();
    let mut sink = stdio::OutputSink::new(tty);
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        if let Ok(data) = frame?.into_data() {
            sink.write(&data)?;
        }
    }
    Ok(0)
}

/// Fills nulls where Go prints an empty slice or map for docker's typed structs.
fn go_typed_nulls(v: &mut Value) {
    const SLICES: [&str; 17] = [
        "Entrypoint",
        "Cmd",
        "Env",
        "OnBuild",
        "Binds",
        "CapAdd",
        "CapDrop",
        "Dns",
        "DnsOptions",
        "DnsSearch",
        "ExtraHosts",
        "GroupAdd",
        "Links",
        "SecurityOpt",
        "VolumesFrom",
        "RepoTags",
        "RepoDigests",
    ];
    const MAPS: [&str; 5] = ["Labels", "Volumes", "ExposedPorts", "Tmpfs", "Sysctls"];
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if val.is_null() {
                    if SLICES.contains(&k.as_str()) {
                        *val = Value::Array(Vec::new());
                    } else if MAPS.contains(&k.as_str()) {
                        *val = Value::Object(serde_json::Map::new());
                    }
                } else {
                    go_typed_nulls(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(go_typed_nulls),
        _ => {}
    }
}

#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    Any,
    Container,
    Image,
}

pub async fn inspect(client: &Client, a: InspectArgs) -> Result<u8> {
    let kind = match a.kind.as_deref() {
        None | Some("") => Kind::Any,
        Some("container") => Kind::Container,
        Some("image") => Kind::Image,
        Some(other) => {
            return Err(ContainersError::Failed(format!(
                "\"{other}\" is not a valid value for --type"
            )));
        }
    };
    inspect_objects(client, &a.names, kind, a.format.as_deref(), a.size).await
}

pub async fn inspect_objects(
    client: &Client,
    names: &[String],
    kind: Kind,
    format: Option<&str>,
    size: bool,
) -> Result<u8> {
    let tpl = match format.map(str::trim).filter(|f| !f.is_empty()) {
        None => None,
        Some("json") => Some(Template::parse("{{json .}}")?),
        Some(f) => Some(Template::parse(&unescape_format(f))?),
    };
    let mut raws = Vec::new();
    let mut errors = Vec::new();
    for n in names {
        let container = Query::new()
            .flag("size", size)
            .path(&format!("/containers/{}/json", seg(n)));
        let image = format!("/images/{}/json", seg(n));
        let attempt = match kind {
            Kind::Container => client.get_bytes(&container).await,
            Kind::Image => client.get_bytes(&image).await,
            Kind::Any => match client.get_bytes(&container).await {
                Err(e) if e.status() == Some(404) => client.get_bytes(&image).await,
                other => other,
            },
        };
        match attempt {
            Ok(raw) => raws.push(raw),
            Err(e) if e.status() == Some(404) && kind == Kind::Any => {
                errors.push(format!("Error: No such object: {n}"))
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    let mut out = String::new();
    match &tpl {
        None => {
            let mut joined = Vec::from(&b"["[..]);
            for (i, r) in raws.iter().enumerate() {
                if i > 0 {
                    joined.push(b',');
                }
                joined.extend_from_slice(r);
            }
            joined.push(b']');
            out.push_str(&format::indent_json(&joined));
            out.push('\n');
        }
        Some(t) => {
            for r in &raws {
                let mut v: Value = serde_json::from_slice(r).map_err(ClientError::from)?;
                go_typed_nulls(&mut v);
                out.push_str(&t.execute(&v, None)?);
                out.push('\n');
            }
        }
    }
    out!("{out}");
    for e in &errors {
        eprintln!("{e}");
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_nulls() {
        let mut v = serde_json::json!({"Config": {"Entrypoint": null, "Labels": null, "Healthcheck": null}});
        go_typed_nulls(&mut v);
        let t =
            Template::parse("{{.Config.Entrypoint}} {{.Config.Labels}} {{.Config.Healthcheck}}")
                .unwrap();
        assert_eq!(t.execute(&v, None).unwrap(), "[] map[] <nil>");
    }
}
