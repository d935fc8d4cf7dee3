//! `--format` handling for list verbs (table / json / template) and the row contexts docker
//! prints for containers, images, history and stats, plus JSON output helpers.

use serde_json::{Map, Value};

use crate::tabwriter;
use crate::template::{Template, TemplateError, go_print, unescape_format};
use crate::units;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// One row: the fields templates see, plus labels for `.Label "key"`.
pub struct Row {
    pub fields: Map<String, Value>,
    pub labels: Map<String, Value>,
}

/// How a list verb prints.
pub struct Printer {
    tpl: Template,
    table: bool,
    json: bool,
}

impl Printer {
    /// `format` as given by the user (None: the verb's default table), `default_table` the
    /// verb's table template (without the `table` word), `quiet` replaces both with `{{.ID}}`.
    pub fn new(
        format: Option<&str>,
        default_table: &str,
        quiet: bool,
    ) -> Result<Printer, FormatError> {
        let format = format.map(str::trim).filter(|f| !f.is_empty());
        let (text, table, json) = match format {
            _ if quiet => ("{{.ID}}".to_string(), false, false),
            None | Some("table") => (default_table.to_string(), true, false),
            Some("json") => (String::new(), false, true),
            Some(f) => match f.strip_prefix("table ") {
                Some(rest) => (rest.to_string(), true, false),
                None => (f.to_string(), false, false),
            },
        };
        let tpl = Template::parse(&unescape_format(&text))?;
        Ok(Printer { tpl, table, json })
    }

    pub fn render(&self, headers: &Value, rows: &[Row]) -> Result<String, FormatError> {
        let mut out = String::new();
        if self.table {
            out.push_str(&self.tpl.execute_header(headers)?);
            out.push('\n');
        }
        for row in rows {
            if self.json {
                out.push_str(&go_json(&Value::Object(row.fields.clone())));
            } else {
                let labels = &row.labels;
                let hook = |_: &Value, name: &str, args: &[Value]| -> Option<Value> {
                    match (name, args) {
                        ("Label", [key]) => Some(
                            labels
                                .get(&go_print(key))
                                .cloned()
                                .unwrap_or(Value::String(String::new())),
                        ),
                        _ => None,
                    }
                };
                out.push_str(
                    &self
                        .tpl
                        .execute(&Value::Object(row.fields.clone()), Some(&hook))?,
                );
            }
            out.push('\n');
        }
        if self.table {
            out = tabwriter::docker_table(&out);
        }
        Ok(out)
    }
}

/// JSON as Go's `json.Marshal` writes it: `<`, `>`, `&` escaped.
pub fn go_json(v: &Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// Re-indents raw JSON with four spaces, keeping the daemon's field order and bytes, as
/// Go's `json.Indent` does (`[]` and `{}` stay compact).
pub fn indent_json(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len() * 2);
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    let mut need_indent = false;
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        for _ in 0..depth {
            out.extend_from_slice(b"    ");
        }
    };
    for &c in raw {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_str = false;
            }
            continue;
        }
        if c.is_ascii_whitespace() {
            continue;
        }
        if need_indent && c != b']' && c != b'}' {
            need_indent = false;
            depth += 1;
            newline(&mut out, depth);
        }
        match c {
            b'"' => {
                in_str = true;
                out.push(c);
            }
            b'{' | b'[' => {
                out.push(c);
                need_indent = true;
            }
            b',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            b'}' | b']' => {
                if need_indent {
                    need_indent = false;
                } else {
                    depth = depth.saturating_sub(1);
                    newline(&mut out, depth);
                }
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

fn i(v: &Value, k: &str) -> i64 {
    v.get(k).and_then(Value::as_i64).unwrap_or(0)
}

fn arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn str_val(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

fn labels_of(v: &Value) -> Map<String, Value> {
    v.get("Labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn labels_string(labels: &Map<String, Value>) -> String {
    let mut kv: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", go_print(v)))
        .collect();
    kv.sort();
    kv.join(",")
}

pub const PS_TABLE: &str =
    "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";
pub const PS_TABLE_SIZE: &str = "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}\t{{.Size}}";

pub fn ps_headers() -> Value {
    serde_json::json!({
        "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
        "RunningFor": "CREATED", "Status": "STATUS", "Ports": "PORTS", "Names": "NAMES",
        "Size": "SIZE", "Labels": "LABELS", "Label": "LABEL", "Mounts": "MOUNTS",
        "LocalVolumes": "LOCAL VOLUMES", "Networks": "NETWORKS", "State": "STATE", "Platform": "PLATFORM",
    })
}

/// A `docker ps` row from a `/containers/json` entry.
pub fn ps_row(c: &Value, trunc: bool) -> Row {
    let id = s(c, "Id");
    let command = s(c, "Command");
    let command = units::go_quote(&if trunc {
        units::ellipsis(&command, 20)
    } else {
        command
    });
    let names: Vec<String> = arr(c, "Names")
        .iter()
        .filter_map(Value::as_str)
        .map(|n| n.strip_prefix('/').unwrap_or(n).to_string())
        .collect();
    let names = if trunc {
        // Links show up as extra names with a slash; the table keeps the container's own.
        names
            .into_iter()
            .find(|n| !n.contains('/'))
            .unwrap_or_default()
    } else {
        names.join(",")
    };
    let mut networks: Vec<String> = c
        .get("NetworkSettings")
        .and_then(|n| n.get("Networks"))
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    networks.sort();
    let mounts: Vec<String> = arr(c, "Mounts")
        .iter()
        .map(|m| {
            let name = s(m, "Name");
            let name = if name.is_empty() {
                s(m, "Source")
            } else {
                name
            };
            if trunc {
                units::ellipsis(&name, 15)
            } else {
                name
            }
        })
        .collect();
    let local_volumes = arr(c, "Mounts")
        .iter()
        .filter(|m| s(m, "Driver") == "local")
        .count();
    let size_rw = i(c, "SizeRw");
    let size_rootfs = i(c, "SizeRootFs");
    let size = if size_rootfs > 0 {
        format!(
            "{} (virtual {})",
            units::human_size_prec(size_rw as f64, 3),
            units::human_size_prec(size_rootfs as f64, 3)
        )
    } else {
        units::human_size_prec(size_rw as f64, 3)
    };
    let labels = labels_of(c);
    let created = i(c, "Created");
    let mut f = Map::new();
    f.insert("Command".into(), str_val(command));
    f.insert("CreatedAt".into(), str_val(units::go_time_string(created)));
    f.insert(
        "ID".into(),
        str_val(if trunc { units::short_id(&id) } else { id }),
    );
    f.insert("Image".into(), str_val(ps_image(c, trunc)));
    f.insert("Labels".into(), str_val(labels_string(&labels)));
    f.insert("LocalVolumes".into(), str_val(local_volumes.to_string()));
    f.insert("Mounts".into(), str_val(mounts.join(",")));
    f.insert("Names".into(), str_val(names));
    f.insert("Networks".into(), str_val(networks.join(",")));
    f.insert("Platform".into(), Value::Null);
    f.insert("Ports".into(), str_val(display_ports(arr(c, "Ports"))));
    f.insert("RunningFor".into(), str_val(units::ago(created)));
    f.insert("Size".into(), str_val(size));
    f.insert("State".into(), str_val(s(c, "State")));
    f.insert("Status".into(), str_val(s(c, "Status")));
    Row { fields: f, labels }
}

fn ps_image(c: &Value, trunc: bool) -> String {
    let image = s(c, "Image");
    if image.is_empty() {
        return "<no image>".into();
    }
    if trunc {
        let image_id = s(c, "ImageID");
        if units::short_id(&image_id) == units::short_id(&image) {
            return units::short_id(&image);
        }
        // A digest reference shows as its name only.
        if let Some((name, _digest)) = image.split_once('@') {
            return name.to_string();
        }
    }
    image
}

struct PortRow {
    ip: String,
    private: u32,
    public: u32,
    kind: String,
}

/// docker's PORTS column: ranges of consecutive ports collapsed, host mappings last.
pub fn display_ports(ports: &[Value]) -> String {
    let mut ps: Vec<PortRow> = ports
        .iter()
        .map(|p| PortRow {
            ip: s(p, "IP"),
            private: i(p, "PrivatePort") as u32,
            public: i(p, "PublicPort") as u32,
            kind: s(p, "Type"),
        })
        .collect();
    ps.sort_by(|a, b| {
        a.private
            .cmp(&b.private)
            .then_with(|| a.ip.cmp(&b.ip))
            .then_with(|| a.public.cmp(&b.public))
            .then_with(|| a.kind.cmp(&b.kind))
    });
    let join_host = |ip: &str, port: &str| {
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    };
    let mut groups: Vec<(String, u32, u32)> = Vec::new();
    let mut result = Vec::new();
    let mut host_mappings = Vec::new();
    for p in &ps {
        let mut key = p.kind.clone();
        if !p.ip.is_empty() {
            if p.public != p.private {
                host_mappings.push(format!(
                    "{}->{}/{}",
                    join_host(&p.ip, &p.public.to_string()),
                    p.private,
                    p.kind
                ));
                continue;
            }
            key = format!("{}/{}", p.ip, p.kind);
        }
        match groups.iter_mut().find(|g| g.0 == key) {
            None => groups.push((key, p.private, p.private)),
            Some(g) if p.private == g.2 + 1 => g.2 = p.private,
            Some(g) => {
                result.push(form_group(&g.0, g.1, g.2));
                g.1 = p.private;
                g.2 = p.private;
            }
        }
    }
    for g in &groups {
        result.push(form_group(&g.0, g.1, g.2));
    }
    result.extend(host_mappings);
    result.join(", ")
}

fn form_group(key: &str, first: u32, last: u32) -> String {
    let (ip, kind) = match key.rsplit_once('/') {
        Some((ip, kind)) => (ip, kind),
        None => ("", key),
    };
    let mut group = first.to_string();
    if first != last {
        group = format!("{group}-{last}");
    }
    if !ip.is_empty() {
        let host = if ip.contains(':') {
            format!("[{ip}]:{group}")
        } else {
            format!("{ip}:{group}")
        };
        group = format!("{host}->{group}");
    }
    format!("{group}/{kind}")
}

pub const IMAGES_TABLE: &str = "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";
pub const IMAGES_TABLE_DIGESTS: &str =
    "{{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";

pub fn images_headers() -> Value {
    serde_json::json!({
        "ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
        "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
        "Containers": "CONTAINERS", "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE",
        "VirtualSize": "VIRTUAL SIZE", "Labels": "LABELS",
    })
}

/// The familiar form of a repository name ("docker.io/library/busybox" -> "busybox").
pub fn familiar(name: &str) -> String {
    let n = name.strip_prefix("docker.io/").unwrap_or(name);
    n.strip_prefix("library/").unwrap_or(n).to_string()
}

/// Splits "name:tag" (the tag after the last slash) or "name@digest".
pub fn split_ref(r: &str) -> (String, Option<String>, Option<String>) {
    let (name, digest) = match r.split_once('@') {
        Some((n, d)) => (n, Some(d.to_string())),
        None => (r, None),
    };
    let slash = name.rfind('/').map_or(0, |p| p + 1);
    match name[slash..].rfind(':') {
        Some(p) => (
            name[..slash + p].to_string(),
            Some(name[slash + p + 1..].to_string()),
            digest,
        ),
        None => (name.to_string(), None, digest),
    }
}

/// `docker images` rows for one `/images/json` entry: one per tag, dangling as `<none>`.
pub fn image_rows(img: &Value, trunc: bool, show_digests: bool) -> Vec<Row> {
    let tags: Vec<&str> = arr(img, "RepoTags")
        .iter()
        .filter_map(Value::as_str)
        .filter(|t| *t != "<none>:<none>")
        .collect();
    let digests: Vec<&str> = arr(img, "RepoDigests")
        .iter()
        .filter_map(Value::as_str)
        .filter(|t| *t != "<none>@<none>")
        .collect();
    let mut entries: Vec<(String, String, String)> = Vec::new();
    if tags.is_empty() && digests.is_empty() {
        entries.push(("<none>".into(), "<none>".into(), "<none>".into()));
    } else {
        let mut repo_tags: Vec<(String, Vec<String>)> = Vec::new();
        for t in &tags {
            let (name, tag, _) = split_ref(t);
            let Some(tag) = tag else { continue };
            let name = familiar(&name);
            match repo_tags.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => v.push(tag),
                None => repo_tags.push((name, vec![tag])),
            }
        }
        let mut repo_digests: Vec<(String, Vec<String>)> = Vec::new();
        for d in &digests {
            let (name, _, digest) = split_ref(d);
            let Some(digest) = digest else { continue };
            let name = familiar(&name);
            match repo_digests.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => v.push(digest),
                None => repo_digests.push((name, vec![digest])),
            }
        }
        for (repo, tags) in &repo_tags {
            let pos = repo_digests.iter().position(|(n, _)| n == repo);
            let ds = pos.map(|p| repo_digests.remove(p).1).unwrap_or_default();
            for tag in tags {
                if !show_digests || ds.is_empty() {
                    entries.push((repo.clone(), tag.clone(), "<none>".into()));
                } else {
                    for d in &ds {
                        entries.push((repo.clone(), tag.clone(), d.clone()));
                    }
                }
            }
        }
        for (repo, ds) in repo_digests {
            if show_digests {
                for d in ds {
                    entries.push((repo.clone(), "<none>".into(), d));
                }
            } else {
                entries.push((
                    repo,
                    "<none>".into(),
                    ds.into_iter().next().unwrap_or_default(),
                ));
            }
        }
    }
    let id = s(img, "Id");
    let created = i(img, "Created");
    let size = i(img, "Size");
    let na_or = |k: &str, f: &dyn Fn(i64) -> String| match img.get(k).and_then(Value::as_i64) {
        Some(n) if n >= 0 => f(n),
        _ => "N/A".to_string(),
    };
    let containers = na_or("Containers", &|n| n.to_string());
    let shared = na_or("SharedSize", &|n| units::human_size_prec(n as f64, 3));
    let unique = match img.get("SharedSize").and_then(Value::as_i64) {
        Some(sh) if sh >= 0 => units::human_size_prec((size - sh) as f64, 3),
        _ => "N/A".to_string(),
    };
    let labels = labels_of(img);
    entries
        .into_iter()
        .map(|(repo, tag, digest)| {
            let mut f = Map::new();
            f.insert("Containers".into(), str_val(containers.clone()));
            f.insert("CreatedAt".into(), str_val(units::go_time_string(created)));
            f.insert("CreatedSince".into(), str_val(units::ago(created)));
            f.insert("Digest".into(), str_val(digest));
            f.insert(
                "ID".into(),
                str_val(if trunc {
                    units::short_id(&id)
                } else {
                    id.clone()
                }),
            );
            f.insert("Repository".into(), str_val(repo));
            f.insert("SharedSize".into(), str_val(shared.clone()));
            f.insert(
                "Size".into(),
                str_val(units::human_size_prec(size as f64, 3)),
            );
            f.insert("Tag".into(), str_val(tag));
            f.insert("UniqueSize".into(), str_val(unique.clone()));
            f.insert(
                "VirtualSize".into(),
                str_val(units::human_size(size as f64)),
            );
            Row {
                fields: f,
                labels: labels.clone(),
            }
        })
        .collect()
}

pub const HISTORY_TABLE: &str =
    "{{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}";

pub fn history_headers(human: bool) -> Value {
    serde_json::json!({
        "ID": "IMAGE", "CreatedSince": if human { "CREATED" } else { "CREATED AT" }, "CreatedAt": "CREATED AT",
        "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT",
    })
}

pub fn history_row(h: &Value, trunc: bool, human: bool) -> Row {
    let id = s(h, "Id");
    let created = i(h, "Created");
    let created_at = chrono::DateTime::from_timestamp(created, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    let by = s(h, "CreatedBy").replace('\t', " ");
    let by = if trunc { units::ellipsis(&by, 45) } else { by };
    let size = i(h, "Size");
    let mut f = Map::new();
    f.insert("Comment".into(), str_val(s(h, "Comment")));
    f.insert("CreatedAt".into(), str_val(created_at.clone()));
    f.insert("CreatedBy".into(), str_val(by));
    f.insert(
        "CreatedSince".into(),
        str_val(if human {
            units::ago(created)
        } else {
            created_at
        }),
    );
    f.insert(
        "ID".into(),
        str_val(if trunc { units::short_id(&id) } else { id }),
    );
    f.insert(
        "Size".into(),
        str_val(if human {
            units::human_size_prec(size as f64, 3)
        } else {
            size.to_string()
        }),
    );
    Row {
        fields: f,
        labels: Map::new(),
    }
}

pub const STATS_TABLE: &str = "{{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

pub fn stats_headers() -> Value {
    serde_json::json!({
        "ID": "CONTAINER ID", "Container": "CONTAINER", "Name": "NAME", "CPUPerc": "CPU %",
        "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O",
        "BlockIO": "BLOCK I/O", "PIDs": "PIDS",
    })
}

/// A `docker stats` row from one `/containers/{id}/stats?stream=0` answer.
pub fn stats_row(container: &str, st: &Value, trunc: bool) -> Row {
    let get = |path: &[&str]| -> Option<&Value> {
        let mut v = st;
        for p in path {
            v = v.get(*p)?;
        }
        Some(v)
    };
    let num = |path: &[&str]| get(path).and_then(Value::as_f64).unwrap_or(0.0);
    let cpu_delta = num(&["cpu_stats", "cpu_usage", "total_usage"])
        - num(&["precpu_stats", "cpu_usage", "total_usage"]);
    let sys_delta =
        num(&["cpu_stats", "system_cpu_usage"]) - num(&["precpu_stats", "system_cpu_usage"]);
    let mut online = num(&["cpu_stats", "online_cpus"]);
    if online == 0.0 {
        online = get(&["cpu_stats", "cpu_usage", "percpu_usage"])
            .and_then(Value::as_array)
            .map_or(0, Vec::len) as f64;
    }
    let cpu = if sys_delta > 0.0 && cpu_delta > 0.0 {
        cpu_delta / sys_delta * online * 100.0
    } else {
        0.0
    };
    let usage = num(&["memory_stats", "usage"]);
    let mem_stat = |k: &str| get(&["memory_stats", "stats", k]).and_then(Value::as_f64);
    let mem = match (mem_stat("total_inactive_file"), mem_stat("inactive_file")) {
        (Some(v), _) if v < usage => usage - v,
        (None, Some(v)) if v < usage => usage - v,
        _ => usage,
    };
    let limit = num(&["memory_stats", "limit"]);
    let mem_pct = if limit != 0.0 {
        mem / limit * 100.0
    } else {
        0.0
    };
    let (mut rx, mut tx) = (0.0, 0.0);
    if let Some(nets) = get(&["networks"]).and_then(Value::as_object) {
        for n in nets.values() {
            rx += n.get("rx_bytes").and_then(Value::as_f64).unwrap_or(0.0);
            tx += n.get("tx_bytes").and_then(Value::as_f64).unwrap_or(0.0);
        }
    }
    let (mut rd, mut wr) = (0.0, 0.0);
    if let Some(entries) =
        get(&["blkio_stats", "io_service_bytes_recursive"]).and_then(Value::as_array)
    {
        for e in entries {
            let v = e.get("value").and_then(Value::as_f64).unwrap_or(0.0);
            match s(e, "op").to_ascii_lowercase().as_str() {
                "read" => rd += v,
                "write" => wr += v,
                _ => {}
            }
        }
    }
    let pids = get(&["pids_stats", "current"])
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let id = s(st, "id");
    let name = s(st, "name");
    let mut f = Map::new();
    f.insert(
        "BlockIO".into(),
        str_val(format!(
            "{} / {}",
            units::human_size_prec(rd, 3),
            units::human_size_prec(wr, 3)
        )),
    );
    f.insert("CPUPerc".into(), str_val(format!("{cpu:.2}%")));
    f.insert("Container".into(), str_val(container));
    f.insert(
        "ID".into(),
        str_val(if trunc { units::short_id(&id) } else { id }),
    );
    f.insert("MemPerc".into(), str_val(format!("{mem_pct:.2}%")));
    f.insert(
        "MemUsage".into(),
        str_val(format!(
            "{} / {}",
            units::bytes_size(mem),
            units::bytes_size(limit)
        )),
    );
    f.insert(
        "Name".into(),
        str_val(name.strip_prefix('/').unwrap_or(&name)),
    );
    f.insert(
        "NetIO".into(),
        str_val(format!(
            "{} / {}",
            units::human_size_prec(rx, 3),
            units::human_size_prec(tx, 3)
        )),
    );
    f.insert("PIDs".into(), str_val(pids.to_string()));
    Row {
        fields: f,
        labels: Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ps_table_like_docker() {
        let now = chrono::Utc::now().timestamp();
        let c = json!({
            "Id": "d1730c206528ae22959016eda67b1b9f817ea470c8aa34c63419ccf27ce4ccd0",
            "Names": ["/sleeper"], "Image": "busybox", "ImageID": "sha256:2c661f76a013",
            "Command": "sleep 1000", "Created": now - 2, "Ports": [], "Labels": {"c": "d", "a": "b"},
            "State": "running", "Status": "Up Less than a second", "Mounts": [],
            "NetworkSettings": {"Networks": {"none": {}}}
        });
        let p = Printer::new(None, PS_TABLE, false).unwrap();
        let out = p.render(&ps_headers(), &[ps_row(&c, true)]).unwrap();
        assert_eq!(
            out,
            "CONTAINER ID   IMAGE     COMMAND        CREATED         STATUS                  PORTS     NAMES\n\
             d1730c206528   busybox   \"sleep 1000\"   2 seconds ago   Up Less than a second             sleeper\n"
        );
        let p = Printer::new(
            Some("{{.Names}} {{.Label \"a\"}} {{.Labels}} {{.Networks}}"),
            PS_TABLE,
            false,
        )
        .unwrap();
        assert_eq!(
            p.render(&ps_headers(), &[ps_row(&c, true)]).unwrap(),
            "sleeper b a=b,c=d none\n"
        );
        let p = Printer::new(None, PS_TABLE, true).unwrap();
        assert_eq!(
            p.render(&ps_headers(), &[ps_row(&c, true)]).unwrap(),
            "d1730c206528\n"
        );
        let p = Printer::new(Some("json"), PS_TABLE, false).unwrap();
        let out = p.render(&ps_headers(), &[ps_row(&c, true)]).unwrap();
        assert!(
            out.starts_with("{\"Command\":\"\\\"sleep 1000\\\"\",\"CreatedAt\":"),
            "{out}"
        );
        assert!(
            out.contains("\"Platform\":null,\"Ports\":\"\",\"RunningFor\":\"2 seconds ago\""),
            "{out}"
        );
    }

    #[test]
    fn images_rows_and_json() {
        let img = json!({"Id": "sha256:2c661f76a0132489c96a4677aecdefd0378df4cef6559df38d83f45a24c74319",
            "RepoTags": ["busybox:latest", "busybox:v1", "localhost:5000/bb:x"], "RepoDigests": null,
            "Created": 0, "Size": 1_986_000, "SharedSize": -1, "Containers": -1});
        let rows = image_rows(&img, true, false);
        let p = Printer::new(None, IMAGES_TABLE, false).unwrap();
        let out = p.render(&images_headers(), &rows).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "REPOSITORY          TAG       IMAGE ID       CREATED        SIZE"
        );
        assert!(
            lines[1].starts_with("busybox             latest    2c661f76a013   "),
            "{out}"
        );
        assert!(lines[2].starts_with("busybox             v1 "), "{out}");
        assert!(lines[3].starts_with("localhost:5000/bb   x "), "{out}");
        assert!(lines[1].ends_with("ago   1.99MB"), "{out}");
        let dangling =
            json!({"Id": "sha256:abc", "RepoTags": [], "RepoDigests": [], "Created": 0, "Size": 0});
        let p = Printer::new(Some("json"), IMAGES_TABLE, false).unwrap();
        let out = p
            .render(&images_headers(), &image_rows(&dangling, true, false))
            .unwrap();
        assert!(out.contains("\"Digest\":\"\\u003cnone\\u003e\""), "{out}");
        assert!(out.contains("\"Containers\":\"N/A\""), "{out}");
    }

    #[test]
    fn refs() {
        assert_eq!(
            split_ref("busybox:latest"),
            ("busybox".into(), Some("latest".into()), None)
        );
        assert_eq!(
            split_ref("localhost:5000/a/b"),
            ("localhost:5000/a/b".into(), None, None)
        );
        assert_eq!(
            split_ref("a/b@sha256:00"),
            ("a/b".into(), None, Some("sha256:00".into()))
        );
        assert_eq!(familiar("docker.io/library/busybox"), "busybox");
        assert_eq!(familiar("docker.io/me/app"), "me/app");
    }

    #[test]
    fn ports_column() {
        let ports = json!([
            {"PrivatePort": 80, "Type": "tcp"},
            {"PrivatePort": 81, "Type": "tcp"},
            {"PrivatePort": 53, "Type": "udp"},
            {"IP": "0.0.0.0", "PrivatePort": 443, "PublicPort": 8443, "Type": "tcp"},
            {"IP": "::", "PrivatePort": 443, "PublicPort": 8443, "Type": "tcp"},
            {"IP": "0.0.0.0", "PrivatePort": 9000, "PublicPort": 9000, "Type": "tcp"}
        ]);
        assert_eq!(
            display_ports(ports.as_array().unwrap()),
            "53/udp, 80-81/tcp, 0.0.0.0:9000->9000/tcp, 0.0.0.0:8443->443/tcp, [::]:8443->443/tcp"
        );
    }

    #[test]
    fn indents_like_go() {
        let raw = br#"{"Id":"x","A":[],"B":{},"C":[1,{"D":"a,b:{"}],"E":null}
"#;
        assert_eq!(
            indent_json(raw),
            "{\n    \"Id\": \"x\",\n    \"A\": [],\n    \"B\": {},\n    \"C\": [\n        1,\n        {\n            \"D\": \"a,b:{\"\n        }\n    ],\n    \"E\": null\n}"
        );
    }

    #[test]
    fn stats_numbers() {
        let st = json!({"id": "d1730c206528ae22", "name": "/sleeper",
            "cpu_stats": {"cpu_usage": {"total_usage": 2_000_000}, "system_cpu_usage": 100_000_000, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000}, "system_cpu_usage": 0},
            "memory_stats": {"usage": 1_000_000, "limit": 2_000_000, "stats": {"total_inactive_file": 197_184}},
            "pids_stats": {"current": 1}});
        let r = stats_row("sleeper", &st, true);
        assert_eq!(r.fields["CPUPerc"], "2.00%");
        assert_eq!(r.fields["MemUsage"], "784KiB / 1.907MiB");
        assert_eq!(r.fields["MemPerc"], "40.14%");
        assert_eq!(r.fields["Name"], "sleeper");
        assert_eq!(r.fields["NetIO"], "0B / 0B");
        assert_eq!(r.fields["PIDs"], "1");
    }
}
