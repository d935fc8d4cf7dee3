//! `create`: resolve the image, merge its config with the options, reserve the name, and
//! record the container. Nothing is mounted or started here.

use std::collections::HashMap;
use std::sync::Arc;

use wharf_api::models::{
    self, ContainerCreateBody, ContainerCreateResponse, RestartPolicyNameEnum,
};

use super::{Container, ContainerError, ContainerRecord, State, Status, names, spec, valid_name};
use crate::Engine;
use crate::image::ImageConfig;
use crate::meta::Table;
use crate::util::{ZERO_TIME, now_rfc3339, random_id};

impl Engine {
    pub async fn create(
        self: &Arc<Self>,
        name: Option<&str>,
        body: ContainerCreateBody,
    ) -> Result<ContainerCreateResponse, ContainerError> {
        let image_ref = body.image.clone().unwrap_or_default();
        if image_ref.is_empty() {
            return Err(ContainerError::Invalid("no image specified".into()));
        }
        if let Some(n) = name
            && !valid_name(n.strip_prefix('/').unwrap_or(n))
        {
            return Err(ContainerError::BadName(n.to_string()));
        }
        let image = self.images.resolve(&image_ref)?;
        // A start usually follows within milliseconds (`run`).
        super::shim::warm_cgroup_migration_for_create();
        let host_arch = crate::image::config::host_arch();
        let arch = match image.architecture.as_str() {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        // Without emulation a foreign binary fails at exec with a bare "exec format error".
        if !arch.is_empty() && arch != host_arch {
            return Err(ContainerError::Invalid(format!(
                "image {image_ref} is for platform linux/{arch}, this machine is linux/{host_arch}: wharf cannot run it"
            )));
        }
        let mut host = body.host_config.clone().unwrap_or_default();
        validate_host_config(&mut host)?;
        let network = self.plan_network(&mut host, &body)?;

        let id = random_id();
        let mut config = merge_config(&body, &image.config);
        if config.hostname.as_deref().unwrap_or("").is_empty() {
            config.hostname = Some(id[..12].to_string());
        }
        config.image = Some(image_ref.clone());
        let mut command = config.entrypoint.clone().unwrap_or_default();
        command.extend(config.cmd.clone().unwrap_or_default());
        if command.is_empty() {
            return Err(ContainerError::Invalid("no command specified".into()));
        }
        let path = command.remove(0);

        let paths = self.container_paths(&id);
        self.spare_dirs.make(&paths.dir)?;
        let record = ContainerRecord {
            id: id.clone(),
            name: String::new(),
            created: now_rfc3339(),
            image_ref,
            image_id: image.id.clone(),
            config,
            host_config: host,
            path,
            args: command,
            state: State {
                status: Status::Created,
                pid: 0,
                exit_code: 0,
                oom_killed: false,
                error: String::new(),
                started_at: ZERO_TIME.into(),
                finished_at: ZERO_TIME.into(),
            },
            restart_count: 0,
            manually_stopped: false,
            warnings: Vec::new(),
            network,
        };

        // Reserve the name and store the record under the registry lock, so two creates with
        // one name cannot both win.
        let result = {
            let mut registry = self.registry();
            let name = match name.map(|n| n.strip_prefix('/').unwrap_or(n).to_string()) {
                Some(n) => {
                    if let Some(owner) = registry.name_owner(&n) {
                        Err(ContainerError::NameInUse {
                            name: n,
                            id: owner.clone(),
                        })
                    } else {
                        Ok(n)
                    }
                }
                None => Ok(names::generate(|n| registry.name_owner(n).is_some())),
            };
            name.and_then(|name| {
                let mut record = record;
                record.name = name;
                // Durable within meta::FLUSH_AFTER: a crash before that leaves a directory
                // without a record, which `recover` deletes.
                self.meta.put_soon(Table::Containers, &id, &record)?;
                registry.insert(Container::new(record));
                Ok(())
            })
        };
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&paths.dir);
            return Err(e);
        }
        Ok(ContainerCreateResponse {
            id,
            warnings: Vec::new(),
        })
    }
}

impl Engine {
    /// Resolves the network mode and endpoints, and checks the published ports.
    fn plan_network(
        &self,
        host: &mut models::HostConfig,
        body: &ContainerCreateBody,
    ) -> Result<crate::network::ContainerNetwork, ContainerError> {
        let mode = host.network_mode.clone().unwrap_or_default();
        if let Some(other) = mode.strip_prefix("container:") {
            let target = self.registry().lookup(other)?;
            host.network_mode = Some(format!("container:{}", target.id()));
            return Ok(Default::default());
        }
        let configs = body
            .networking_config
            .as_ref()
            .and_then(|n| n.endpoints_config.clone())
            .unwrap_or_default();
        let (mode, net) = self.networks.plan(&mode, &configs)?;
        crate::network::ports::wanted(host.port_bindings.as_ref(), false, &[])?;
        for extra in host.extra_hosts.iter().flatten() {
            let (name, ip) = extra.split_once(':').ok_or_else(|| {
                ContainerError::Invalid(format!("invalid argument \"{extra}\" for \"--add-host\""))
            })?;
            if name.is_empty() || (ip != "host-gateway" && ip.parse::<std::net::IpAddr>().is_err())
            {
                return Err(ContainerError::Invalid(format!(
                    "invalid IP address in add-host: \"{ip}\""
                )));
            }
        }
        host.network_mode = Some(mode);
        Ok(net)
    }
}

/// The image's config overlaid with the create options, as Docker merges them.
fn merge_config(body: &ContainerCreateBody, image: &ImageConfig) -> models::ContainerConfig {
    let mut env: Vec<String> = image.env.clone().unwrap_or_default();
    for kv in body.env.clone().unwrap_or_default() {
        let key = kv.split('=').next().unwrap_or_default().to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    // Docker's merge: an entrypoint from the user discards the image's Cmd; an explicitly
    // empty entrypoint (`--entrypoint ""`, sent as [""]) clears the image's.
    let user_cmd = body.cmd.clone().filter(|c| !c.is_empty());
    let (entrypoint, cmd) = match body.entrypoint.clone() {
        Some(ep) if !ep.is_empty() => (
            ep.into_iter().filter(|a| !a.is_empty()).collect(),
            user_cmd.unwrap_or_default(),
        ),
        user_ep => (
            if user_ep.is_none() {
                image.entrypoint.clone().unwrap_or_default()
            } else {
                Vec::new()
            },
            user_cmd.or_else(|| image.cmd.clone()).unwrap_or_default(),
        ),
    };
    let mut labels: HashMap<String, String> = image.labels.clone().unwrap_or_default();
    labels.extend(body.labels.clone().unwrap_or_default());
    let mut exposed: Vec<String> = image.exposed_ports.clone().unwrap_or_default();
    for p in body.exposed_ports.clone().unwrap_or_default() {
        if !exposed.contains(&p) {
            exposed.push(p);
        }
    }
    let mut volumes: Vec<String> = image.volumes.clone().unwrap_or_default();
    for v in body.volumes.clone().unwrap_or_default() {
        if !volumes.contains(&v) {
            volumes.push(v);
        }
    }
    let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    models::ContainerConfig {
        hostname: body.hostname.clone(),
        domainname: Some(body.domainname.clone().unwrap_or_default()),
        user: Some(
            non_empty(&body.user)
                .or_else(|| image.user.clone())
                .unwrap_or_default(),
        ),
        attach_stdin: Some(body.attach_stdin.unwrap_or(false)),
        attach_stdout: Some(body.attach_stdout.unwrap_or(false)),
        attach_stderr: Some(body.attach_stderr.unwrap_or(false)),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        tty: Some(body.tty.unwrap_or(false)),
        open_stdin: Some(body.open_stdin.unwrap_or(false)),
        stdin_once: Some(body.stdin_once.unwrap_or(false)),
        env: Some(env),
        cmd: (!cmd.is_empty()).then_some(cmd),
        healthcheck: body
            .healthcheck
            .clone()
            .or_else(|| image.healthcheck.clone()),
        args_escaped: None,
        image: None,
        volumes: (!volumes.is_empty()).then_some(volumes),
        working_dir: Some(
            non_empty(&body.working_dir)
                .or_else(|| image.working_dir.clone())
                .unwrap_or_default(),
        ),
        entrypoint: (!entrypoint.is_empty()).then_some(entrypoint),
        network_disabled: body.network_disabled,
        on_build: image.on_build.clone(),
        labels: Some(labels),
        stop_signal: non_empty(&body.stop_signal).or_else(|| image.stop_signal.clone()),
        stop_timeout: body.stop_timeout,
        shell: body.shell.clone().or_else(|| image.shell.clone()),
    }
}

/// Rejects options that cannot work, and fills the defaults Docker shows in inspect.
fn validate_host_config(host: &mut models::HostConfig) -> Result<(), ContainerError> {
    let policy = host.restart_policy.get_or_insert_with(Default::default);
    let name = policy.name.unwrap_or(RestartPolicyNameEnum::EMPTY);
    let name = if name == RestartPolicyNameEnum::EMPTY {
        RestartPolicyNameEnum::NO
    } else {
        name
    };
    policy.name = Some(name);
    let retries = policy.maximum_retry_count.unwrap_or(0);
    if retries < 0 {
        return Err(ContainerError::Invalid(
            "invalid restart policy: maximum retry count cannot be negative".into(),
        ));
    }
    if retries > 0 && name != RestartPolicyNameEnum::ON_FAILURE {
        return Err(ContainerError::Invalid(format!(
            "invalid restart policy: maximum retry count can only be used with 'on-failure' (got '{name}')"
        )));
    }
    policy.maximum_retry_count = Some(retries);
    // Clients read the log driver from inspect (docker-py's `run` does).
    host.log_config
        .get_or_insert_with(|| models::HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::new()),
        });
    if host.auto_remove.unwrap_or(false) && name != RestartPolicyNameEnum::NO {
        return Err(ContainerError::Invalid(
            "conflicting options: cannot specify both --restart and --rm".into(),
        ));
    }
    for cap in host
        .cap_add
        .iter_mut()
        .chain(host.cap_drop.iter_mut())
        .flatten()
    {
        *cap = spec::validate_capability(cap)?;
    }
    if host.network_mode.as_deref().unwrap_or("").is_empty() {
        host.network_mode = Some("default".into());
    }
    if let Some(cpus) = host.nano_cpus
        && cpus < 0
    {
        return Err(ContainerError::Invalid(
            "invalid CPU value: must be positive".into(),
        ));
    }
    if let Some(mem) = host.memory
        && mem != 0
        && mem < 6 * 1024 * 1024
    {
        return Err(ContainerError::Invalid(
            "Minimum memory limit allowed is 6MB".into(),
        ));
    }
    Ok(())
}
