//! `version` and `info`.

use serde_json::{Value, json};

use crate::client::{Client, ClientError};
use crate::opts::FormatArgs;
use crate::template::{Template, TemplateError, unescape_format};
use crate::units;

#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Template(#[from] TemplateError),
}

impl SystemError {
    pub fn exit_code(&self) -> u8 {
        1
    }
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn client_version() -> Value {
    json!({
        "Platform": {"Name": "wharf"},
        "Version": env!("CARGO_PKG_VERSION"),
        "APIVersion": wharf_api::API_VERSION,
        "DefaultAPIVersion": wharf_api::API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": std::env::consts::OS,
        "Arch": arch(),
        "BuildTime": "",
        "Context": "default",
    })
}

/// The server's version as docker's templates see it: Go field names (`APIVersion`) and
/// build times in `time.ANSIC`.
fn go_version_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        if let Some(api) = m.remove("ApiVersion") {
            m.insert("APIVersion".into(), api);
        }
        if let Some(Value::String(t)) = m.get("BuildTime") {
            let t = ansic(t);
            m.insert("BuildTime".into(), Value::String(t));
        }
        if let Some(Value::Array(comps)) = m.get_mut("Components") {
            for c in comps {
                if let Some(Value::String(t)) = c.get("Details").and_then(|d| d.get("BuildTime")) {
                    let t = ansic(t);
                    if let Some(d) = c.get_mut("Details").and_then(Value::as_object_mut) {
                        d.insert("BuildTime".into(), Value::String(t));
                    }
                }
            }
        }
    }
    v
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn render(format: &str, data: &Value) -> Result<String, SystemError> {
    let t = Template::parse(&unescape_format(format))?;
    Ok(t.execute(data, None)?)
}

pub async fn version(client: &Client, a: FormatArgs) -> Result<u8, SystemError> {
    let mut c = client_version();
    let server = client.get::<Value>("/version").await;
    // Like docker, the client reports the version it ends up speaking: the lower of the two.
    let theirs = server
        .as_ref()
        .ok()
        .map(|v| s(v, "ApiVersion").to_string())
        .unwrap_or_default();
    let ours = wharf_api::API_VERSION;
    let downgraded = matches!(
        (wharf_api::parse_version(&theirs), wharf_api::parse_version(ours)),
        (Some(t), Some(o)) if t < o
    );
    if let Some(m) = c.as_object_mut() {
        let speaking = if downgraded {
            theirs.clone()
        } else {
            ours.to_string()
        };
        m.insert("APIVersion".into(), Value::String(speaking));
    }
    if let Some(f) = a.format.as_deref() {
        let data = json!({"Client": c, "Server": server.as_ref().ok().map(go_version_fields)});
        outln!("{}", render(f, &data)?);
        return Ok(if server.is_ok() { 0 } else { 1 });
    }
    let mut out = String::new();
    out.push_str("Client:\n");
    out.push_str(&format!(" Version:           {}\n", s(&c, "Version")));
    if downgraded {
        out.push_str(&format!(
            " API version:       {theirs} (downgraded from {ours})\n"
        ));
    } else {
        out.push_str(&format!(" API version:       {ours}\n"));
    }
    out.push_str(&format!(
        " OS/Arch:           {}/{}\n",
        s(&c, "Os"),
        s(&c, "Arch")
    ));
    out.push_str(" Context:           default\n");
    out!("{out}");
    let v = server?;
    let mut out = String::new();
    let platform = v.get("Platform").map(|p| s(p, "Name")).unwrap_or_default();
    out.push_str("\nServer:");
    if !platform.is_empty() {
        out.push(' ');
        out.push_str(platform);
    }
    out.push('\n');
    let components = v
        .get("Components")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for comp in &components {
        let name = s(comp, "Name");
        let d = comp.get("Details").cloned().unwrap_or(Value::Null);
        out.push_str(&format!(" {name}:\n"));
        if name == "Engine" {
            out.push_str(&format!("  Version:          {}\n", s(comp, "Version")));
            out.push_str(&format!(
                "  API version:      {} (minimum version {})\n",
                s(&d, "ApiVersion"),
                s(&d, "MinAPIVersion")
            ));
            out.push_str(&format!("  Go version:       {}\n", s(&d, "GoVersion")));
            out.push_str(&format!("  Git commit:       {}\n", s(&d, "GitCommit")));
            out.push_str(&format!(
                "  Built:            {}\n",
                ansic(s(&d, "BuildTime"))
            ));
            out.push_str(&format!(
                "  OS/Arch:          {}/{}\n",
                s(&d, "Os"),
                s(&d, "Arch")
            ));
            out.push_str(&format!("  Experimental:     {}\n", s(&d, "Experimental")));
        } else {
            out.push_str(&format!("  Version:          {}\n", s(comp, "Version")));
            if let Some(m) = d.as_object() {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                for k in keys {
                    let pad = 16usize.saturating_sub(k.len()) + 1;
                    out.push_str(&format!("  {k}:{}{}\n", " ".repeat(pad), s(&d, k)));
                }
            }
        }
    }
    if components.is_empty() {
        out.push_str(&format!("  Version:          {}\n", s(&v, "Version")));
        out.push_str(&format!(
            "  API version:      {} (minimum version {})\n",
            s(&v, "ApiVersion"),
            s(&v, "MinAPIVersion")
        ));
    }
    out!("{out}");
    Ok(0)
}

/// Go's `time.ANSIC` form of an RFC 3339 time ("Thu May  7 21:09:36 2026").
fn ansic(t: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(t) {
        Ok(t) => t.format("%a %b %e %H:%M:%S %Y").to_string(),
        Err(_) => t.to_string(),
    }
}

fn n(v: &Value, k: &str) -> i64 {
    v.get(k).and_then(Value::as_i64).unwrap_or(0)
}

pub async fn info(client: &Client, a: FormatArgs) -> Result<u8, SystemError> {
    let mut v: Value = client.get("/info").await?;
    if let Some(f) = a.format.as_deref() {
        if let Some(m) = v.as_object_mut() {
            m.insert(
                "ClientInfo".into(),
                json!({"Version": env!("CARGO_PKG_VERSION"), "Context": "default", "Debug": false}),
            );
        }
        outln!("{}", render(f, &v)?);
        return Ok(0);
    }
    let mut o = String::new();
    o.push_str("Client:\n");
    o.push_str(&format!(" Version:    {}\n", env!("CARGO_PKG_VERSION")));
    o.push_str(" Context:    default\n");
    o.push_str(" Debug Mode: false\n\n");
    o.push_str("Server:\n");
    o.push_str(&format!(" Containers: {}\n", n(&v, "Containers")));
    o.push_str(&format!("  Running: {}\n", n(&v, "ContainersRunning")));
    o.push_str(&format!("  Paused: {}\n", n(&v, "ContainersPaused")));
    o.push_str(&format!("  Stopped: {}\n", n(&v, "ContainersStopped")));
    o.push_str(&format!(" Images: {}\n", n(&v, "Images")));
    o.push_str(&format!(" Server Version: {}\n", s(&v, "ServerVersion")));
    o.push_str(&format!(" Storage Driver: {}\n", s(&v, "Driver")));
    for pair in v
        .get("DriverStatus")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        if let Some([k, val]) = pair.as_array().map(Vec::as_slice) {
            o.push_str(&format!(
                "  {}: {}\n",
                k.as_str().unwrap_or_default(),
                val.as_str().unwrap_or_default()
            ));
        }
    }
    o.push_str(&format!(" Logging Driver: {}\n", s(&v, "LoggingDriver")));
    o.push_str(&format!(" Cgroup Driver: {}\n", s(&v, "CgroupDriver")));
    o.push_str(&format!(" Cgroup Version: {}\n", s(&v, "CgroupVersion")));
    if let Some(p) = v.get("Plugins").and_then(Value::as_object) {
        o.push_str(" Plugins:\n");
        for kind in ["Volume", "Network", "Authorization", "Log"] {
            let names: Vec<&str> = p
                .get(kind)
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .filter_map(Value::as_str)
                .collect();
            if !names.is_empty() {
                o.push_str(&format!("  {kind}: {}\n", names.join(" ")));
            }
        }
    }
    if let Some(rt) = v.get("Runtimes").and_then(Value::as_object) {
        let mut names: Vec<&String> = rt.keys().collect();
        names.sort();
        let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        o.push_str(&format!(" Runtimes: {}\n", names.join(" ")));
    }
    o.push_str(&format!(" Default Runtime: {}\n", s(&v, "DefaultRuntime")));
    if let Some(sec) = v.get("SecurityOptions").and_then(Value::as_array) {
        o.push_str(" Security Options:\n");
        for opt in sec.iter().filter_map(Value::as_str) {
            let mut parts = opt.split(',');
            if let Some(first) = parts.next() {
                o.push_str(&format!(
                    "  {}\n",
                    first.strip_prefix("name=").unwrap_or(first)
                ));
            }
            for p in parts {
                if let Some((k, val)) = p.split_once('=') {
                    let mut k = k.to_string();
                    if let Some(f) = k.get_mut(0..1) {
                        f.make_ascii_uppercase();
                    }
                    o.push_str(&format!("   {k}: {val}\n"));
                }
            }
        }
    }
    o.push_str(&format!(" Kernel Version: {}\n", s(&v, "KernelVersion")));
    o.push_str(&format!(
        " Operating System: {}\n",
        s(&v, "OperatingSystem")
    ));
    o.push_str(&format!(" OSType: {}\n", s(&v, "OSType")));
    o.push_str(&format!(" Architecture: {}\n", s(&v, "Architecture")));
    o.push_str(&format!(" CPUs: {}\n", n(&v, "NCPU")));
    o.push_str(&format!(
        " Total Memory: {}\n",
        units::bytes_size(n(&v, "MemTotal") as f64)
    ));
    o.push_str(&format!(" Name: {}\n", s(&v, "Name")));
    o.push_str(&format!(" ID: {}\n", s(&v, "ID")));
    o.push_str(&format!(" Docker Root Dir: {}\n", s(&v, "DockerRootDir")));
    o.push_str(&format!(
        " Debug Mode: {}\n",
        v.get("Debug").and_then(Value::as_bool).unwrap_or(false)
    ));
    o.push_str(&format!(
        " Experimental: {}\n",
        v.get("ExperimentalBuild")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    ));
    let insecure: Vec<&str> = v
        .get("RegistryConfig")
        .and_then(|r| r.get("InsecureRegistryCIDRs"))
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if !insecure.is_empty() {
        o.push_str(" Insecure Registries:\n");
        for r in insecure {
            o.push_str(&format!("  {r}\n"));
        }
    }
    o.push_str(&format!(
        " Live Restore Enabled: {}\n",
        v.get("LiveRestoreEnabled")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    ));
    o.push('\n');
    for w in v
        .get("Warnings")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        if let Some(w) = w.as_str() {
            eprintln!("{w}");
        }
    }
    out!("{o}");
    Ok(0)
}
