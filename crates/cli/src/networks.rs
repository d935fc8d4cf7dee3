//! `network create/ls/inspect/rm/prune/connect/disconnect` and `port`.

use serde_json::{Map, Value, json};

use crate::client::{Client, ClientError, Query, seg};
use crate::format::{self, FormatError, Printer, Row};
use crate::images::{self, ImagesError};
use crate::opts::{
    NetworkConnectArgs, NetworkCreateArgs, NetworkDisconnectArgs, NetworkInspectArgs,
    NetworkLsArgs, NetworkPruneArgs, NetworkRmArgs, PortArgs,
};
use crate::template::{Template, TemplateError, unescape_format};

#[derive(Debug, thiserror::Error)]
pub enum NetworksError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Images(#[from] ImagesError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}

impl NetworksError {
    pub fn exit_code(&self) -> u8 {
        1
    }
}

type Result<T> = std::result::Result<T, NetworksError>;

fn key_values(list: &[String], what: &str) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for kv in list {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        if k.is_empty() {
            return Err(NetworksError::Invalid(format!("invalid {what}: {kv}")));
        }
        m.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(m)
}

pub async fn create(client: &Client, a: NetworkCreateArgs) -> Result<u8> {
    let mut ipam = Map::new();
    if a.subnet.is_some() || a.gateway.is_some() || a.ip_range.is_some() {
        let mut cfg = Map::new();
        for (k, v) in [
            ("Subnet", &a.subnet),
            ("Gateway", &a.gateway),
            ("IPRange", &a.ip_range),
        ] {
            if let Some(v) = v {
                cfg.insert(k.into(), Value::String(v.clone()));
            }
        }
        ipam.insert("Config".into(), json!([cfg]));
    }
    ipam.insert("Driver".into(), json!("default"));
    let body = json!({
        "Name": a.name,
        "Driver": a.driver,
        "Internal": a.internal,
        "Attachable": a.attachable,
        "IPAM": ipam,
        "Labels": key_values(&a.label, "label")?,
        "Options": key_values(&a.opt, "option")?,
    });
    let resp: Value = client.post("/networks/create", Some(&body)).await?;
    outln!("{}", resp["Id"].as_str().unwrap_or_default());
    Ok(0)
}

pub async fn ls(client: &Client, a: NetworkLsArgs) -> Result<u8> {
    let filters = images::parse_filters(&a.filter)?;
    let path = Query::new()
        .opt("filters", images::filters_json(&filters))
        .path("/networks");
    let list: Vec<Value> = client
        .get::<Option<Vec<Value>>>(&path)
        .await?
        .unwrap_or_default();
    let printer = Printer::new(
        a.format.as_deref(),
        "{{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}",
        a.quiet,
    )?;
    let headers = json!({"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
        "IPv6": "IPV6", "Internal": "INTERNAL", "CreatedAt": "CREATED AT", "Labels": "LABELS"});
    let rows: Vec<Row> = list
        .iter()
        .map(|n| {
            let id = n["Id"].as_str().unwrap_or_default();
            let id = if a.no_trunc {
                id
            } else {
                &id[..id.len().min(12)]
            };
            let labels = n["Labels"].as_object().cloned().unwrap_or_default();
            let mut fields = Map::new();
            fields.insert("ID".into(), json!(id));
            fields.insert("Name".into(), n["Name"].clone());
            fields.insert("Driver".into(), n["Driver"].clone());
            fields.insert("Scope".into(), n["Scope"].clone());
            fields.insert(
                "IPv6".into(),
                json!(n["EnableIPv6"].as_bool().unwrap_or(false).to_string()),
            );
            fields.insert(
                "Internal".into(),
                json!(n["Internal"].as_bool().unwrap_or(false).to_string()),
            );
            fields.insert("CreatedAt".into(), n["Created"].clone());
            let joined: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            fields.insert("Labels".into(), json!(joined.join(",")));
            Row { fields, labels }
        })
        .collect();
    out!("{}", printer.render(&headers, &rows)?);
    Ok(0)
}

pub async fn inspect(client: &Client, a: NetworkInspectArgs) -> Result<u8> {
    let tpl = match a.format.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
        None => None,
        Some("json") => Some(Template::parse("{{json .}}")?),
        Some(f) => Some(Template::parse(&unescape_format(f))?),
    };
    let mut found = Vec::new();
    let mut failed = false;
    for n in &a.names {
        match client.get::<Value>(&format!("/networks/{}", seg(n))).await {
            Ok(v) => found.push(v),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    match tpl {
        None => {
            let raw = serde_json::to_vec(&found).map_err(ClientError::from)?;
            outln!("{}", format::indent_json(&raw));
        }
        Some(t) => {
            for v in &found {
                outln!("{}", t.execute(v, None)?);
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

pub async fn rm(client: &Client, a: NetworkRmArgs) -> Result<u8> {
    let mut code = 0;
    for n in &a.names {
        match client.delete_empty(&format!("/networks/{}", seg(n))).await {
            Ok(()) => outln!("{n}"),
            Err(e) if a.force && e.status() == Some(404) => {}
            Err(e) => {
                eprintln!("{e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

pub async fn prune(client: &Client, a: NetworkPruneArgs) -> Result<u8> {
    if !a.force
        && !images::confirm(
            "WARNING! This will remove all custom networks not used by at least one container.",
        )
    {
        return Ok(0);
    }
    let filters = images::parse_filters(&a.filter)?;
    let path = Query::new()
        .opt("filters", images::filters_json(&filters))
        .path("/networks/prune");
    let report: Value = client.post::<Value, ()>(&path, None).await?;
    let deleted = report["NetworksDeleted"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !deleted.is_empty() {
        outln!("Deleted Networks:");
        for d in deleted {
            outln!("{}", d.as_str().unwrap_or_default());
        }
    }
    Ok(0)
}

pub async fn connect(client: &Client, a: NetworkConnectArgs) -> Result<u8> {
    let mut ep = Map::new();
    if !a.alias.is_empty() {
        ep.insert("Aliases".into(), json!(a.alias));
    }
    if let Some(ip) = &a.ip {
        ep.insert("IPAMConfig".into(), json!({"IPv4Address": ip}));
    }
    let body = json!({"Container": a.container, "EndpointConfig": ep});
    client
        .post::<Option<Value>, _>(
            &format!("/networks/{}/connect", seg(&a.network)),
            Some(&body),
        )
        .await?;
    Ok(0)
}

pub async fn disconnect(client: &Client, a: NetworkDisconnectArgs) -> Result<u8> {
    let body = json!({"Container": a.container, "Force": a.force});
    client
        .post::<Option<Value>, _>(
            &format!("/networks/{}/disconnect", seg(&a.network)),
            Some(&body),
        )
        .await?;
    Ok(0)
}

/// `port`: "80/tcp -> 0.0.0.0:18080" lines, or the host addresses of one port.
pub async fn port(client: &Client, a: PortArgs) -> Result<u8> {
    let c: Value = client
        .get(&format!("/containers/{}/json", seg(&a.container)))
        .await?;
    let ports = c["NetworkSettings"]["Ports"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut keys: Vec<&String> = ports.keys().collect();
    keys.sort_by_key(|k| {
        let (p, proto) = k.split_once('/').unwrap_or((k, "tcp"));
        (p.parse::<u32>().unwrap_or(0), proto.to_string())
    });
    let want = a.port.as_ref().map(|p| {
        if p.contains('/') {
            p.clone()
        } else {
            format!("{p}/tcp")
        }
    });
    let mut printed = false;
    for k in keys {
        if want.as_ref().is_some_and(|w| w != k) {
            continue;
        }
        for b in ports[k].as_array().cloned().unwrap_or_default() {
            let ip = b["HostIp"].as_str().unwrap_or_default();
            let hp = b["HostPort"].as_str().unwrap_or_default();
            let addr = if ip.contains(':') {
                format!("[{ip}]:{hp}")
            } else {
                format!("{ip}:{hp}")
            };
            if want.is_some() {
                outln!("{addr}");
            } else {
                outln!("{k} -> {addr}");
            }
            printed = true;
        }
    }
    if let Some(w) = want
        && !printed
    {
        return Err(NetworksError::Failed(format!(
            "Error: No public port '{w}' published for {}",
            a.container
        )));
    }
    Ok(0)
}
