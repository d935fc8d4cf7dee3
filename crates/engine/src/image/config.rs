//! The image config blob (what the image id is the digest of), and `--change` instructions.

use std::collections::{BTreeMap, HashMap};

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use wharf_api::models;

use super::ImageError;

/// Docker's runtime config of an image: the defaults a container starts with.
/// Field names and shapes are those of the config blob, so it round-trips exactly enough.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `80/tcp`...; a `{"80/tcp": {}}` map in the blob.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "key_set")]
    pub exposed_ports: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Mount points; a `{"/data": {}}` map in the blob.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "key_set")]
    pub volumes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "sorted_labels"
    )]
    pub labels: Option<HashMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<models::HealthConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
}

/// The `{}` values of `ExposedPorts` and `Volumes`; whatever a blob has there is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Empty {}

impl<'de> Deserialize<'de> for Empty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Empty {})
    }
}

/// A list of keys stored as a map to empty objects, as Docker stores ports and volumes.
mod key_set {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<Vec<String>>, s: S) -> Result<S::Ok, S::Error> {
        let Some(keys) = v else {
            return s.serialize_none();
        };
        let mut sorted: Vec<&String> = keys.iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut m = s.serialize_map(Some(sorted.len()))?;
        for k in sorted {
            m.serialize_entry(k, &Empty {})?;
        }
        m.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
        let m: Option<BTreeMap<String, Empty>> = Option::deserialize(d)?;
        Ok(m.map(|m| m.into_keys().collect()))
    }
}

/// Labels in key order, so the same config always makes the same bytes (and id).
fn sorted_labels<S: Serializer>(
    v: &Option<HashMap<String, String>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        None => s.serialize_none(),
        Some(l) => l.iter().collect::<BTreeMap<_, _>>().serialize(s),
    }
}

impl ImageConfig {
    /// The API model of this config, for inspect.
    pub fn to_api(&self) -> models::ImageConfig {
        models::ImageConfig {
            user: Some(self.user.clone().unwrap_or_default()),
            exposed_ports: self.exposed_ports.clone(),
            env: self.env.clone(),
            cmd: self.cmd.clone(),
            healthcheck: self.healthcheck.clone(),
            args_escaped: self.args_escaped,
            volumes: self.volumes.clone(),
            working_dir: Some(self.working_dir.clone().unwrap_or_default()),
            entrypoint: self.entrypoint.clone(),
            on_build: self.on_build.clone(),
            labels: Some(self.labels.clone().unwrap_or_default()),
            stop_signal: self.stop_signal.clone(),
            shell: self.shell.clone(),
        }
    }
}

/// One `history` entry of the config blob.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_layer: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub typ: String,
    #[serde(default, deserialize_with = "null_default")]
    pub diff_ids: Vec<String>,
}

/// The image config blob (OCI image config, with Docker's extra fields tolerated).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ImageConfig>,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub history: Vec<History>,
}

fn null_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Docker's name for this machine's CPU architecture.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

fn bad_change(msg: impl Into<String>) -> ImageError {
    ImageError::Invalid(msg.into())
}

/// Applies Dockerfile-style `--change` instructions (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL,
/// ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR) to `config`.
pub fn apply_changes(config: &mut ImageConfig, changes: &[String]) -> Result<(), ImageError> {
    for change in changes {
        let line = change.trim();
        if line.is_empty() {
            continue;
        }
        let (word, rest) = match line.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r.trim()),
            None => (line, ""),
        };
        let instr = word.to_ascii_uppercase();
        match instr.as_str() {
            "CMD" => config.cmd = Some(command(rest)?),
            "ENTRYPOINT" => config.entrypoint = Some(command(rest)?),
            "SHELL" => {
                config.shell =
                    Some(json_array(rest)?.ok_or_else(|| {
                        bad_change("SHELL requires the arguments to be in JSON form")
                    })?)
            }
            "ENV" => {
                let env = config.env.get_or_insert_with(Vec::new);
                for (k, v) in key_values(&instr, rest)? {
                    env.retain(|e| e.split('=').next() != Some(k.as_str()));
                    env.push(format!("{k}={v}"));
                }
            }
            "LABEL" => {
                let labels = config.labels.get_or_insert_with(HashMap::new);
                for (k, v) in key_values(&instr, rest)? {
                    labels.insert(k, v);
                }
            }
            "EXPOSE" => {
                let ports = config.exposed_ports.get_or_insert_with(Vec::new);
                for p in words(rest)? {
                    ports.extend(expand_port(&p)?);
                }
                ports.sort();
                ports.dedup();
            }
            "VOLUME" => {
                let list = match json_array(rest)? {
                    Some(v) => v,
                    None => words(rest)?,
                };
                if list.is_empty() || list.iter().any(|v| v.is_empty()) {
                    return Err(bad_change("VOLUME specified can not be an empty string"));
                }
                let vols = config.volumes.get_or_insert_with(Vec::new);
                vols.extend(list);
                vols.sort();
                vols.dedup();
            }
            "USER" => config.user = Some(single(&instr, rest)?),
            "STOPSIGNAL" => config.stop_signal = Some(single(&instr, rest)?),
            "WORKDIR" => {
                let dir = single(&instr, rest)?;
                let dir = if dir.starts_with('/') {
                    dir
                } else {
                    let base = config.working_dir.clone().unwrap_or_else(|| "/".into());
                    format!("{}/{dir}", base.trim_end_matches('/'))
                };
                config.working_dir = Some(dir);
            }
            "ONBUILD" => {
                if rest.is_empty() {
                    return Err(bad_change("ONBUILD requires at least one argument"));
                }
                config
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(rest.to_string());
            }
            _ => return Err(bad_change(format!("{word} is not a valid change command"))),
        }
    }
    Ok(())
}

/// A JSON array of strings, or None when `s` is not one (the shell form).
fn json_array(s: &str) -> Result<Option<Vec<String>>, ImageError> {
    if !s.starts_with('[') {
        return Ok(None);
    }
    Ok(serde_json::from_str::<Vec<String>>(s).ok())
}

/// CMD/ENTRYPOINT: the JSON (exec) form as is; the shell form runs under `/bin/sh -c`.
fn command(rest: &str) -> Result<Vec<String>, ImageError> {
    if let Some(v) = json_array(rest)? {
        return Ok(v);
    }
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec!["/bin/sh".into(), "-c".into(), rest.to_string()])
}

fn single(instr: &str, rest: &str) -> Result<String, ImageError> {
    let w = words(rest)?;
    match w.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(bad_change(format!("{instr} requires exactly one argument"))),
    }
}

/// Splits on whitespace, honouring double and single quotes and backslash escapes.
fn words(s: &str) -> Result<Vec<String>, ImageError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(bad_change(format!("unterminated quote in {s:?}")));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// `ENV k=v k2="v 2"` or the legacy `ENV k v w` (one pair, the value is the rest).
fn key_values(instr: &str, rest: &str) -> Result<Vec<(String, String)>, ImageError> {
    let w = words(rest)?;
    if w.is_empty() {
        return Err(bad_change(format!(
            "{instr} requires at least one argument"
        )));
    }
    if !w[0].contains('=') {
        if w.len() < 2 && instr == "LABEL" {
            return Err(bad_change("LABEL requires KEY=VALUE"));
        }
        let value = rest[rest.find(char::is_whitespace).unwrap_or(rest.len())..].trim();
        let value = words(value)?.join(" ");
        return Ok(vec![(w[0].clone(), value)]);
    }
    w.into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(bad_change(format!(
                "{instr} names must not be empty: {kv:?}"
            ))),
        })
        .collect()
}

/// `80`, `80/udp`, `8000-8002/tcp` into Docker's `port/proto` keys.
fn expand_port(p: &str) -> Result<Vec<String>, ImageError> {
    let (ports, proto) = match p.split_once('/') {
        Some((ports, proto)) => (ports, proto.to_ascii_lowercase()),
        None => (p, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad_change(format!("invalid proto: {proto}")));
    }
    let parse = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| bad_change(format!("invalid containerPort: {s}")))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => (parse(ports)?, parse(ports)?),
    };
    if hi < lo {
        return Err(bad_change(format!("invalid port range: {ports}")));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(changes: &[&str]) -> Result<ImageConfig, ImageError> {
        let mut c = ImageConfig::default();
        let changes: Vec<String> = changes.iter().map(|s| s.to_string()).collect();
        apply_changes(&mut c, &changes).map(|()| c)
    }

    #[test]
    fn changes_build_the_config() {
        let c = apply(&[
            r#"CMD ["sh", "-c", "echo hi"]"#,
            "ENTRYPOINT /bin/run --x",
            "ENV A=1 B=\"two words\"",
            "ENV C 3 4",
            "ENV A=5",
            "EXPOSE 80 53/udp 8000-8001",
            "LABEL com.x=\"y z\" k=v",
            "USER nobody",
            "WORKDIR /srv",
            "WORKDIR app",
            "VOLUME /data /logs",
            r#"VOLUME ["/cache"]"#,
            "STOPSIGNAL SIGINT",
        ])
        .unwrap();
        assert_eq!(c.cmd.unwrap(), vec!["sh", "-c", "echo hi"]);
        assert_eq!(c.entrypoint.unwrap(), vec!["/bin/sh", "-c", "/bin/run --x"]);
        assert_eq!(c.env.unwrap(), vec!["B=two words", "C=3 4", "A=5"]);
        let ports = c.exposed_ports.unwrap();
        assert_eq!(ports, vec!["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
        let labels = c.labels.unwrap();
        assert_eq!(labels["com.x"], "y z");
        assert_eq!(labels["k"], "v");
        assert_eq!(c.user.unwrap(), "nobody");
        assert_eq!(c.working_dir.unwrap(), "/srv/app");
        let vols = c.volumes.unwrap();
        assert_eq!(vols, vec!["/cache", "/data", "/logs"]);
        assert_eq!(c.stop_signal.unwrap(), "SIGINT");
    }

    #[test]
    fn bad_changes_are_refused() {
        let err = apply(&["FROM busybox"]).unwrap_err().to_string();
        assert_eq!(err, "FROM is not a valid change command");
        assert!(apply(&["EXPOSE 80/xyz"]).is_err());
        assert!(apply(&["EXPOSE abc"]).is_err());
        assert!(apply(&["USER a b"]).is_err());
        assert!(apply(&["ENV A=\"open"]).is_err());
        assert!(apply(&["LABEL"]).is_err());
    }

    #[test]
    fn config_blob_tolerates_nulls_and_unknown_fields() {
        let raw = br#"{"architecture":"amd64","os":"linux","config":{"Env":null,"Cmd":["sh"],
            "ExposedPorts":{"80/tcp":{}},"Hostname":"x","Image":""},"container_config":{},
            "rootfs":{"type":"layers","diff_ids":null},"history":null}"#;
        let doc: ConfigDoc = serde_json::from_slice(raw).unwrap();
        let config = doc.config.unwrap();
        assert_eq!(config.cmd.clone().unwrap(), vec!["sh"]);
        assert!(config.env.is_none());
        assert_eq!(config.exposed_ports.clone().unwrap(), vec!["80/tcp"]);
        let again = serde_json::to_value(&config).unwrap();
        assert_eq!(again["ExposedPorts"], serde_json::json!({"80/tcp": {}}));
        assert!(doc.rootfs.diff_ids.is_empty());
    }
}
