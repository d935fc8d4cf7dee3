//! `run` / `create` flags -> the `POST /containers/create` body, with docker's parsing rules
//! for env files, ports, volumes, mounts, ulimits, restart policies and sizes.

use std::collections::HashMap;

use wharf_api::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountBindOptions,
    MountBindOptionsPropagationEnum, MountTmpfsOptions, MountType, MountVolumeOptions, PortBinding,
    ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum,
};

use crate::opts::ContainerOpts;
use crate::units;

#[derive(Debug, thiserror::Error)]
pub enum OptsError {
    #[error("invalid argument {value:?} for \"{flag}\" flag: {reason}")]
    Invalid {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("conflicting options: {0}")]
    Conflict(&'static str),
    #[error("invalid restart policy format: {0}")]
    Restart(String),
    #[error(transparent)]
    Units(#[from] units::UnitsError),
}

fn invalid(flag: &'static str, value: &str, reason: impl Into<String>) -> OptsError {
    OptsError::Invalid {
        flag,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// What pulling policy `--pull` asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pull {
    Missing,
    Always,
    Never,
}

/// Which streams the foreground run attaches.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

pub struct Built {
    pub body: ContainerCreateBody,
    pub name: Option<String>,
    pub image: String,
    pub pull: Pull,
    /// `--platform`, for the pull of a missing image.
    pub platform: Option<String>,
    pub streams: Streams,
}

/// Builds the create body. `detach` and `attach` (`-a`) are `run`'s; `create` passes
/// `detach = false` and attaches as docker's create does (stdout, stderr, stdin with `-i`).
pub fn build(
    c: &ContainerOpts,
    detach: bool,
    attach: &[String],
    console: Option<(u16, u16)>,
) -> Result<Built, OptsError> {
    let image = c.args.first().cloned().unwrap_or_default();
    let cmd: Vec<String> = c.args.iter().skip(1).cloned().collect();
    let pull = match c.pull.as_str() {
        "missing" => Pull::Missing,
        "always" => Pull::Always,
        "never" => Pull::Never,
        other => {
            return Err(invalid(
                "--pull",
                other,
                "must be \"always\", \"missing\" or \"never\"",
            ));
        }
    };
    if detach && !attach.is_empty() {
        return Err(OptsError::Conflict("-a and -d"));
    }
    let mut streams = Streams::default();
    if !detach {
        if attach.is_empty() {
            streams = Streams {
                stdin: c.interactive,
                stdout: true,
                stderr: true,
            };
        } else {
            for a in attach {
                match a.to_ascii_lowercase().as_str() {
                    "stdin" => streams.stdin = true,
                    "stdout" => streams.stdout = true,
                    "stderr" => streams.stderr = true,
                    _ => {
                        return Err(invalid(
                            "--attach",
                            a,
                            "valid streams are STDIN, STDOUT and STDERR",
                        ));
                    }
                }
            }
        }
    }

    let mut env = Vec::new();
    for f in &c.env_file {
        env.extend(read_env_file(f)?);
    }
    for e in &c.env {
        env.push(env_value(e));
    }
    let mut labels = HashMap::new();
    for l in &c.label {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            return Err(invalid("--label", l, "empty label name"));
        }
        labels.insert(k.to_string(), v.to_string());
    }

    let mut binds = Vec::new();
    let mut volumes = Vec::new();
    for v in &c.volume {
        match parse_volume(v)? {
            Volume::Bind(b) => binds.push(b),
            Volume::Anonymous(p) => volumes.push(p),
        }
    }
    let mut mounts = Vec::new();
    for m in &c.mount {
        mounts.push(parse_mount(m)?);
    }
    let mut tmpfs = HashMap::new();
    for t in &c.tmpfs {
        let (path, opts) = t.split_once(':').unwrap_or((t.as_str(), ""));
        if !path.starts_with('/') {
            return Err(invalid(
                "--tmpfs",
                t,
                "the mount point must be an absolute path",
            ));
        }
        tmpfs.insert(path.to_string(), opts.to_string());
    }

    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &c.publish {
        for (port, binding) in parse_publish(p)? {
            if !exposed.contains(&port) {
                exposed.push(port.clone());
            }
            bindings
                .entry(port)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(binding);
        }
    }
    for e in &c.expose {
        for port in parse_expose(e)? {
            if !exposed.contains(&port) {
                exposed.push(port);
            }
        }
    }

    let mut ulimits = Vec::new();
    for u in &c.ulimit {
        ulimits.push(parse_ulimit(u)?);
    }
    let restart = match &c.restart {
        Some(r) => Some(parse_restart(r)?),
        None => None,
    };
    if c.rm
        && restart
            .as_ref()
            .is_some_and(|r| r.name != Some(RestartPolicyNameEnum::NO))
    {
        return Err(OptsError::Conflict("--restart and --rm"));
    }
    let nano_cpus = match &c.cpus {
        Some(v) => {
            let f: f64 = v
                .parse()
                .map_err(|_| invalid("--cpus", v, "invalid number"))?;
            if f < 0.0 {
                return Err(invalid("--cpus", v, "must be positive"));
            }
            Some((f * 1e9).round() as i64)
        }
        None => None,
    };
    let bytes = |flag: &'static str, v: &Option<String>| -> Result<Option<i64>, OptsError> {
        match v {
            Some(v) if flag == "--memory-swap" && v == "-1" => Ok(Some(-1)),
            Some(v) => units::ram_in_bytes(v)
                .map(Some)
                .map_err(|e| invalid(flag, v, e.to_string())),
            None => Ok(None),
        }
    };
    let mut security_opt = Vec::new();
    for s in &c.security_opt {
        security_opt.push(parse_security_opt(s)?);
    }
    let mut sysctls = HashMap::new();
    for s in &c.sysctl {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| invalid("--sysctl", s, "expected key=value"))?;
        sysctls.insert(k.to_string(), v.to_string());
    }
    let mut log_opts = HashMap::new();
    for o in &c.log_opt {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| invalid("--log-opt", o, "expected key=value"))?;
        log_opts.insert(k.to_string(), v.to_string());
    }

    let nonempty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let host_config = HostConfig {
        binds: nonempty(&binds),
        mounts: (!mounts.is_empty()).then_some(mounts),
        tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
        readonly_rootfs: c.read_only.then_some(true),
        init: c.init.then_some(true),
        memory: bytes("--memory", &c.memory)?,
        memory_swap: bytes("--memory-swap", &c.memory_swap)?,
        memory_reservation: bytes("--memory-reservation", &c.memory_reservation)?,
        shm_size: bytes("--shm-size", &c.shm_size)?,
        nano_cpus,
        cpu_shares: c.cpu_shares,
        cpuset_cpus: c.cpuset_cpus.clone(),
        pids_limit: c.pids_limit,
        ulimits: (!ulimits.is_empty()).then_some(ulimits),
        cap_add: nonempty(&normalize_caps(&c.cap_add)),
        cap_drop: nonempty(&normalize_caps(&c.cap_drop)),
        privileged: c.privileged.then_some(true),
        security_opt: nonempty(&security_opt),
        restart_policy: restart,
        auto_remove: c.rm.then_some(true),
        network_mode: Some(c.network.clone().unwrap_or_else(|| "default".into())),
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        publish_all_ports: c.publish_all.then_some(true),
        extra_hosts: nonempty(&c.add_host),
        dns: nonempty(&c.dns),
        dns_search: nonempty(&c.dns_search),
        dns_options: nonempty(&c.dns_option),
        group_add: nonempty(&c.group_add),
        sysctls: (!sysctls.is_empty()).then_some(sysctls),
        oom_score_adj: c.oom_score_adj,
        pid_mode: c.pid.clone(),
        ipc_mode: c.ipc.clone(),
        uts_mode: c.uts.clone(),
        log_config: c.log_driver.clone().map(|t| HostConfigLogConfig {
            typ: Some(t),
            config: Some(log_opts),
        }),
        console_size: console
            .filter(|_| c.tty)
            .map(|(r, w)| vec![r as usize, w as usize]),
        ..Default::default()
    };
    let entrypoint = c.entrypoint.as_ref().map(|e| {
        if e.is_empty() {
            vec![String::new()]
        } else {
            vec![e.clone()]
        }
    });
    let body = ContainerCreateBody {
        hostname: c.hostname.clone(),
        domainname: c.domainname.clone(),
        user: c.user.clone(),
        attach_stdin: Some(streams.stdin),
        attach_stdout: Some(streams.stdout),
        attach_stderr: Some(streams.stderr),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        tty: Some(c.tty),
        open_stdin: Some(c.interactive),
        stdin_once: Some(c.interactive && streams.stdin),
        env: nonempty(&env),
        cmd: (!cmd.is_empty()).then_some(cmd),
        image: Some(image.clone()),
        volumes: (!volumes.is_empty()).then_some(volumes),
        working_dir: c.workdir.clone(),
        entrypoint,
        labels: Some(labels),
        stop_signal: c.stop_signal.clone(),
        stop_timeout: c.stop_timeout,
        host_config: Some(host_config),
        networking_config: networking_config(c),
        ..Default::default()
    };
    Ok(Built {
        body,
        name: c.name.clone(),
        image,
        pull,
        platform: c.platform.clone(),
        streams,
    })
}

/// `-e KEY` takes KEY's value from our environment when it is set (docker's rule).
pub fn env_value(e: &str) -> String {
    if e.contains('=') {
        return e.to_string();
    }
    match std::env::var(e) {
        Ok(v) => format!("{e}={v}"),
        Err(_) => e.to_string(),
    }
}

/// An env file: `KEY=VALUE` lines, `KEY` alone taken from our environment, `#` comments.
pub fn read_env_file(path: &str) -> Result<Vec<String>, OptsError> {
    let text = std::fs::read_to_string(path).map_err(|source| OptsError::Read {
        path: path.to_string(),
        source,
    })?;
    parse_env_lines(&text, path)
}

pub fn parse_env_lines(text: &str, path: &str) -> Result<Vec<String>, OptsError> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, _) = line.split_once('=').unwrap_or((line, ""));
        if key.is_empty() {
            return Err(invalid(
                "--env-file",
                path,
                format!("no variable name on line '{line}'"),
            ));
        }
        if key.contains(char::is_whitespace) {
            return Err(invalid(
                "--env-file",
                path,
                format!("variable '{key}' contains whitespaces"),
            ));
        }
        if line.contains('=') {
            out.push(line.to_string());
        } else if let Ok(v) = std::env::var(key) {
            out.push(format!("{key}={v}"));
        }
    }
    Ok(out)
}

enum Volume {
    Bind(String),
    Anonymous(String),
}

fn parse_volume(v: &str) -> Result<Volume, OptsError> {
    let parts: Vec<&str> = v.split(':').collect();
    match parts.as_slice() {
        [dst] => {
            if !dst.starts_with('/') {
                return Err(invalid("--volume", v, "invalid volume specification"));
            }
            Ok(Volume::Anonymous(dst.to_string()))
        }
        [src, dst, rest @ ..] if rest.len() <= 1 => {
            if src.is_empty() || !dst.starts_with('/') {
                return Err(invalid("--volume", v, "invalid volume specification"));
            }
            // Relative host paths are resolved here, as docker does.
            let src = if src.starts_with('.') {
                std::env::current_dir()
                    .map(|d| d.join(src).to_string_lossy().into_owned())
                    .map_err(|source| OptsError::Read {
                        path: ".".into(),
                        source,
                    })?
            } else {
                src.to_string()
            };
            Ok(Volume::Bind(match rest.first() {
                Some(mode) => format!("{src}:{dst}:{mode}"),
                None => format!("{src}:{dst}"),
            }))
        }
        _ => Err(invalid("--volume", v, "invalid volume specification")),
    }
}

fn parse_mount(spec: &str) -> Result<Mount, OptsError> {
    let mut m = Mount {
        typ: Some(MountType::VOLUME),
        ..Default::default()
    };
    let mut bind = MountBindOptions::default();
    let mut tmpfs = MountTmpfsOptions::default();
    let mut volume = MountVolumeOptions::default();
    for field in spec.split(',') {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let flag = |v: Option<&str>| -> Result<bool, OptsError> {
            match v {
                None | Some("1") | Some("true") => Ok(true),
                Some("0") | Some("false") => Ok(false),
                Some(other) => Err(invalid(
                    "--mount",
                    spec,
                    format!("invalid value for {k}: {other}"),
                )),
            }
        };
        let val = || {
            v.map(str::to_string).ok_or_else(|| {
                invalid(
                    "--mount",
                    spec,
                    format!("invalid field '{field}' must be a key=value pair"),
                )
            })
        };
        match k.as_str() {
            "type" => {
                m.typ = Some(match val()?.as_str() {
                    "bind" => MountType::BIND,
                    "volume" => MountType::VOLUME,
                    "tmpfs" => MountType::TMPFS,
                    other => {
                        return Err(invalid(
                            "--mount",
                            spec,
                            format!("unsupported mount type '{other}'"),
                        ));
                    }
                })
            }
            "source" | "src" => m.source = Some(val()?),
            "target" | "destination" | "dst" => m.target = Some(val()?),
            "readonly" | "ro" => m.read_only = Some(flag(v)?),
            "bind-propagation" => {
                bind.propagation = Some(
                    val()?
                        .parse::<MountBindOptionsPropagationEnum>()
                        .map_err(|e| invalid("--mount", spec, e))?,
                )
            }
            "bind-nonrecursive" => bind.non_recursive = Some(flag(v)?),
            "volume-nocopy" => volume.no_copy = Some(flag(v)?),
            "tmpfs-size" => tmpfs.size_bytes = Some(units::ram_in_bytes(&val()?)?),
            "tmpfs-mode" => {
                let mode = val()?;
                tmpfs.mode =
                    Some(i64::from_str_radix(&mode, 8).map_err(|_| {
                        invalid("--mount", spec, format!("invalid tmpfs-mode {mode}"))
                    })?)
            }
            _ => return Err(invalid("--mount", spec, format!("unexpected key '{k}'"))),
        }
    }
    if m.target.is_none() {
        return Err(invalid("--mount", spec, "target is required"));
    }
    match m.typ {
        Some(MountType::BIND) => {
            if m.source.is_none() {
                return Err(invalid(
                    "--mount",
                    spec,
                    "source is required when specifying bind mounts",
                ));
            }
            if bind != MountBindOptions::default() {
                m.bind_options = Some(bind);
            }
        }
        Some(MountType::TMPFS) => {
            if tmpfs != MountTmpfsOptions::default() {
                m.tmpfs_options = Some(tmpfs);
            }
        }
        _ => {
            if volume != MountVolumeOptions::default() {
                m.volume_options = Some(volume);
            }
        }
    }
    Ok(m)
}

fn port_range(s: &str, flag: &'static str, whole: &str) -> Result<(u32, u32), OptsError> {
    let parse = |p: &str| -> Result<u32, OptsError> {
        match p.parse::<u32>() {
            Ok(n) if n <= 65535 => Ok(n),
            _ => Err(invalid(flag, whole, format!("invalid port {p:?}"))),
        }
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse(a)?, parse(b)?);
            if b < a {
                return Err(invalid(flag, whole, format!("invalid range {s}")));
            }
            Ok((a, b))
        }
        None => {
            let p = parse(s)?;
            Ok((p, p))
        }
    }
}

fn split_proto<'a>(
    s: &'a str,
    flag: &'static str,
    whole: &str,
) -> Result<(&'a str, &'a str), OptsError> {
    let (port, proto) = s.rsplit_once('/').unwrap_or((s, "tcp"));
    if !matches!(proto, "tcp" | "udp" | "sctp") {
        return Err(invalid(flag, whole, format!("invalid proto {proto:?}")));
    }
    Ok((port, proto))
}

/// `-p [ip:][hostPort:]containerPort[/proto]`, ranges allowed, into (port/proto, binding).
/// `--network-alias`, `--ip`, `--mac-address`: the endpoint settings of `--network`.
fn networking_config(c: &ContainerOpts) -> Option<wharf_api::models::NetworkingConfig> {
    if c.network_alias.is_empty() && c.ip.is_none() && c.mac_address.is_none() {
        return None;
    }
    let net = c.network.clone().unwrap_or_else(|| "default".into());
    let ep = wharf_api::models::EndpointSettings {
        aliases: (!c.network_alias.is_empty()).then(|| c.network_alias.clone()),
        ipam_config: c
            .ip
            .clone()
            .map(|ip| wharf_api::models::EndpointIpamConfig {
                ipv4_address: Some(ip),
                ..Default::default()
            }),
        mac_address: c.mac_address.clone(),
        ..Default::default()
    };
    Some(wharf_api::models::NetworkingConfig {
        endpoints_config: Some(HashMap::from([(net, ep)])),
    })
}

pub fn parse_publish(spec: &str) -> Result<Vec<(String, PortBinding)>, OptsError> {
    let (rest, proto) = split_proto(spec, "--publish", spec)?;
    // An IPv6 host address comes in brackets: [::1]:8080:80
    let (ip, rest) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, after) = r
            .split_once(']')
            .ok_or_else(|| invalid("--publish", spec, "invalid IP address"))?;
        (
            ip.to_string(),
            after.strip_prefix(':').unwrap_or(after).to_string(),
        )
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.as_slice() {
            [ip, h, c] => (ip.to_string(), format!("{h}:{c}")),
            _ => (String::new(), rest.to_string()),
        }
    };
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (h.to_string(), c.to_string()),
        None => (String::new(), rest.clone()),
    };
    if container.is_empty() {
        return Err(invalid("--publish", spec, "no port specified"));
    }
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(invalid(
            "--publish",
            spec,
            format!("invalid IP address: {ip}"),
        ));
    }
    let (c0, c1) = port_range(&container, "--publish", spec)?;
    let host_range = if host.is_empty() {
        None
    } else {
        Some(port_range(&host, "--publish", spec)?)
    };
    if let Some((h0, h1)) = host_range
        && h1 - h0 != c1 - c0
        && h0 != h1
    {
        return Err(invalid("--publish", spec, "port ranges don't match"));
    }
    let mut out = Vec::new();
    for (i, port) in (c0..=c1).enumerate() {
        let host_port = match host_range {
            None => String::new(),
            Some((h0, h1)) if h0 == h1 && c0 != c1 => h0.to_string(),
            Some((h0, _)) => (h0 + i as u32).to_string(),
        };
        out.push((
            format!("{port}/{proto}"),
            PortBinding {
                host_ip: Some(ip.clone()),
                host_port: Some(host_port),
            },
        ));
    }
    Ok(out)
}

fn parse_expose(spec: &str) -> Result<Vec<String>, OptsError> {
    let (port, proto) = split_proto(spec, "--expose", spec)?;
    let (a, b) = port_range(port, "--expose", spec)?;
    Ok((a..=b).map(|p| format!("{p}/{proto}")).collect())
}

const ULIMITS: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

pub fn parse_ulimit(spec: &str) -> Result<ResourcesUlimits, OptsError> {
    let (name, values) = spec
        .split_once('=')
        .ok_or_else(|| invalid("--ulimit", spec, "invalid ulimit argument"))?;
    if !ULIMITS.contains(&name) {
        return Err(invalid(
            "--ulimit",
            spec,
            format!("invalid ulimit type: {name}"),
        ));
    }
    let num = |v: &str| {
        v.parse::<i64>()
            .map_err(|_| invalid("--ulimit", spec, format!("invalid ulimit value: {v}")))
    };
    let (soft, hard) = match values.split_once(':') {
        Some((s, h)) => (num(s)?, num(h)?),
        None => {
            let v = num(values)?;
            (v, v)
        }
    };
    if soft > hard && hard != -1 {
        return Err(invalid(
            "--ulimit",
            spec,
            format!("ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"),
        ));
    }
    Ok(ResourcesUlimits {
        name: Some(name.to_string()),
        soft: Some(soft),
        hard: Some(hard),
    })
}

pub fn parse_restart(spec: &str) -> Result<RestartPolicy, OptsError> {
    let (name, count) = match spec.split_once(':') {
        Some((n, c)) => (n, Some(c)),
        None => (spec, None),
    };
    let name_enum = match name {
        "" | "no" => RestartPolicyNameEnum::NO,
        "always" => RestartPolicyNameEnum::ALWAYS,
        "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        _ => return Err(OptsError::Restart(spec.to_string())),
    };
    let max = match count {
        None => None,
        Some(c) if name == "on-failure" => Some(
            c.parse::<i64>()
                .map_err(|_| OptsError::Restart(spec.to_string()))?,
        ),
        Some(_) => return Err(OptsError::Restart(spec.to_string())),
    };
    Ok(RestartPolicy {
        name: Some(name_enum),
        maximum_retry_count: max,
    })
}

/// Capabilities as docker sends them: upper case with the `CAP_` prefix (`ALL` stays).
fn normalize_caps(caps: &[String]) -> Vec<String> {
    caps.iter()
        .map(|c| {
            let up = c.trim().to_ascii_uppercase();
            if up == "ALL" || up.starts_with("CAP_") {
                up
            } else {
                format!("CAP_{up}")
            }
        })
        .collect()
}

/// `seccomp=<file>` carries the profile's contents, as docker's CLI sends it.
fn parse_security_opt(s: &str) -> Result<String, OptsError> {
    if let Some(path) = s.strip_prefix("seccomp=")
        && path != "unconfined"
    {
        let text = std::fs::read_to_string(path).map_err(|source| OptsError::Read {
            path: path.to_string(),
            source,
        })?;
        let compact: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| invalid("--security-opt", s, e.to_string()))?;
        return Ok(format!("seccomp={compact}"));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> ContainerOpts {
        ContainerOpts {
            args: args.iter().map(|s| s.to_string()).collect(),
            pull: "missing".into(),
            ..Default::default()
        }
    }

    #[test]
    fn minimal_body() {
        let b = build(&opts(&["busybox", "echo", "hi"]), false, &[], None).unwrap();
        assert_eq!(b.image, "busybox");
        assert_eq!(b.body.cmd, Some(vec!["echo".to_string(), "hi".to_string()]));
        assert_eq!(
            b.streams,
            Streams {
                stdin: false,
                stdout: true,
                stderr: true
            }
        );
        let v = serde_json::to_value(&b.body).unwrap();
        assert_eq!(v["HostConfig"]["NetworkMode"], "default");
        assert_eq!(v["AttachStdout"], true);
        assert!(v["HostConfig"].get("AutoRemove").is_none());
    }

    #[test]
    fn flags_map_to_fields() {
        let mut o = opts(&["busybox"]);
        o.interactive = true;
        o.rm = true;
        o.memory = Some("32m".into());
        o.cpus = Some("0.5".into());
        o.pids_limit = Some(10);
        o.ulimit = vec!["nofile=1024:2048".into()];
        o.cap_add = vec!["net_admin".into()];
        o.restart = Some("no".into());
        o.tmpfs = vec!["/run:size=1m".into()];
        o.volume = vec!["/src:/dst:ro".into(), "/anon".into()];
        o.label = vec!["a=b".into(), "c".into()];
        o.entrypoint = Some(String::new());
        o.publish = vec!["8080:80".into(), "127.0.0.1::53/udp".into()];
        let b = build(&o, false, &[], None).unwrap();
        let v = serde_json::to_value(&b.body).unwrap();
        let hc = &v["HostConfig"];
        assert_eq!(hc["Memory"], 32 * 1024 * 1024);
        assert_eq!(hc["NanoCpus"], 500_000_000);
        assert_eq!(hc["PidsLimit"], 10);
        assert_eq!(
            hc["Ulimits"][0],
            serde_json::json!({"Name": "nofile", "Soft": 1024, "Hard": 2048})
        );
        assert_eq!(hc["CapAdd"][0], "CAP_NET_ADMIN");
        assert_eq!(hc["AutoRemove"], true);
        assert_eq!(hc["Tmpfs"]["/run"], "size=1m");
        assert_eq!(hc["Binds"][0], "/src:/dst:ro");
        assert_eq!(
            hc["PortBindings"]["80/tcp"][0],
            serde_json::json!({"HostIp": "", "HostPort": "8080"})
        );
        assert_eq!(
            hc["PortBindings"]["53/udp"][0],
            serde_json::json!({"HostIp": "127.0.0.1", "HostPort": ""})
        );
        assert_eq!(
            v["ExposedPorts"],
            serde_json::json!({"80/tcp": {}, "53/udp": {}})
        );
        assert_eq!(v["Volumes"], serde_json::json!({"/anon": {}}));
        assert_eq!(v["Labels"], serde_json::json!({"a": "b", "c": ""}));
        assert_eq!(v["Entrypoint"], serde_json::json!([""]));
        assert_eq!(v["OpenStdin"], true);
        assert_eq!(v["StdinOnce"], true);
        assert_eq!(v["AttachStdin"], true);
    }

    #[test]
    fn bad_input_is_refused() {
        let mut o = opts(&["busybox"]);
        o.rm = true;
        o.restart = Some("always".into());
        assert!(matches!(
            build(&o, false, &[], None),
            Err(OptsError::Conflict(_))
        ));
        assert!(build(&opts(&["busybox"]), true, &["stdout".into()], None).is_err());
        let mut o = opts(&["busybox"]);
        o.memory = Some("lots".into());
        assert!(build(&o, false, &[], None).is_err());
        let mut o = opts(&["busybox"]);
        o.pull = "sometimes".into();
        assert!(build(&o, false, &[], None).is_err());
        assert!(parse_ulimit("nofile").is_err());
        assert!(parse_ulimit("bogus=1").is_err());
        assert!(parse_ulimit("nofile=10:5").is_err());
        assert!(parse_restart("on-failure:x").is_err());
        assert!(parse_restart("always:3").is_err());
        assert!(parse_restart("sometimes").is_err());
        assert!(parse_publish("99999:80").is_err());
        assert!(parse_publish("80/icmp").is_err());
        assert!(parse_volume("relative").is_err());
    }

    #[test]
    fn restart_and_ports() {
        let r = parse_restart("on-failure:3").unwrap();
        assert_eq!(r.name, Some(RestartPolicyNameEnum::ON_FAILURE));
        assert_eq!(r.maximum_retry_count, Some(3));
        let p = parse_publish("8000-8001:80-81").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].0, "81/tcp");
        assert_eq!(p[1].1.host_port.as_deref(), Some("8001"));
        let p = parse_publish("[::1]:8080:80").unwrap();
        assert_eq!(p[0].1.host_ip.as_deref(), Some("::1"));
        assert_eq!(
            parse_expose("7000-7001/udp").unwrap(),
            vec!["7000/udp", "7001/udp"]
        );
    }

    #[test]
    fn env_files() {
        let text = "# comment\n\nA=1\n  B=two words\nC\nNOT_SET_ANYWHERE_XYZ\n";
        // set_var is unsafe in edition 2024, so an inherited variable stands in.
        let path_val = std::env::var("PATH").unwrap_or_default();
        let out = parse_env_lines(&text.replace("C\n", "PATH\n"), "f").unwrap();
        assert_eq!(
            out,
            vec![
                "A=1".to_string(),
                "B=two words".to_string(),
                format!("PATH={path_val}")
            ]
        );
        assert!(parse_env_lines("BAD KEY=1\n", "f").is_err());
        assert_eq!(env_value("X=1"), "X=1");
        assert_eq!(env_value("NOT_SET_ANYWHERE_XYZ"), "NOT_SET_ANYWHERE_XYZ");
    }

    #[test]
    fn mounts() {
        let m = parse_mount("type=bind,src=/a,dst=/b,readonly").unwrap();
        assert_eq!(m.typ, Some(MountType::BIND));
        assert_eq!(m.read_only, Some(true));
        let m = parse_mount("type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=1777").unwrap();
        assert_eq!(m.tmpfs_options.and_then(|t| t.mode), Some(0o1777));
        assert!(parse_mount("type=bind,dst=/b").is_err());
        assert!(parse_mount("type=weird,dst=/b").is_err());
    }
}
