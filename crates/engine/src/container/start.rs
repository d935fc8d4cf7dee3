//! `start`: mount the rootfs, write the runtime spec, start the shim, connect the attaches
//! that were waiting, let the process run, and watch for its exit.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use super::spec::{self, SpecInput};
use super::{Container, ContainerError, ContainerPaths, ContainerRecord, Status, shim};
use crate::meta::Table;
use crate::util::{ZERO_TIME, now_rfc3339, write_replace};
use crate::{Engine, snapshot};

/// The exit code Docker records when the runtime could not start the process.
pub(super) fn start_failure_code(message: &str) -> i32 {
    if message.contains("executable file not found")
        || message.contains("no such file or directory")
    {
        127
    } else if message.contains("permission denied") || message.contains("is a directory") {
        126
    } else {
        128
    }
}

impl Engine {
    pub async fn start(self: &Arc<Self>, key: &str) -> Result<(), ContainerError> {
        let c = self.registry().lookup(key)?;
        let _op = c.op.lock().await;
        self.start_locked(&c).await
    }

    /// Starts `c`; the caller holds its op lock.
    pub(super) async fn start_locked(
        self: &Arc<Self>,
        c: &Arc<Container>,
    ) -> Result<(), ContainerError> {
        let rec = c.snapshot();
        rec.state.status.guard_start()?;
        shim::warm_cgroup_migration_for_create();
        let paths = self.container_paths(&rec.id);
        // By id: an image removed with `rmi -f` keeps its layers for the containers using it.
        let lowers = self.images.lower_dirs_by_id(&rec.image_id)?;
        snapshot::unmount(&paths.rootfs())?;
        // A --rm container's layer is deleted after one run: nothing to sync, ever.
        let volatile = rec.host_config.auto_remove.unwrap_or(false);
        snapshot::mount_overlay_with(
            &lowers,
            &paths.upper(),
            &paths.work(),
            &paths.rootfs(),
            volatile,
        )?;

        match self.launch(c, &rec, &paths).await {
            Ok(pid) => {
                let mut r = c.record();
                r.state.status = Status::Running;
                r.state.pid = pid;
                r.state.exit_code = 0;
                r.state.oom_killed = false;
                r.state.error.clear();
                r.state.started_at = now_rfc3339();
                r.state.finished_at = ZERO_TIME.into();
                r.manually_stopped = false;
                let snapshot = r.clone();
                drop(r);
                // A restarted daemon finds a running container by its shim (recover).
                self.meta
                    .put_soon(Table::Containers, &snapshot.id, &snapshot)?;
                self.spawn_monitor(c.clone());
                Ok(())
            }
            Err(e) => {
                let _ = snapshot::unmount(&paths.rootfs());
                let message = e.to_string();
                let snapshot = {
                    let mut r = c.record();
                    r.state.status = if r.state.status == Status::Created {
                        Status::Created
                    } else {
                        Status::Exited
                    };
                    r.state.exit_code = start_failure_code(&message);
                    r.state.error = message;
                    r.state.pid = 0;
                    r.clone()
                };
                self.meta.put(Table::Containers, &snapshot.id, &snapshot)?;
                c.fail_pending_attaches(&e);
                Err(e)
            }
        }
    }

    /// Writes the bundle and runs the shim; returns the container's pid.
    async fn launch(
        self: &Arc<Self>,
        c: &Arc<Container>,
        rec: &ContainerRecord,
        paths: &ContainerPaths,
    ) -> Result<u32, ContainerError> {
        let mut net = rec.network.clone();
        let exposed = rec.config.exposed_ports.clone().unwrap_or_default();
        let wanted = crate::network::ports::wanted(
            rec.host_config.port_bindings.as_ref(),
            rec.host_config.publish_all_ports.unwrap_or(false),
            &exposed,
        )?;
        let wanted = if net.endpoints.is_empty() {
            Vec::new()
        } else {
            wanted
        };
        self.networks.reserve(
            &crate::network::Attach {
                id: &rec.id,
                name: &rec.name,
                ports: &wanted,
            },
            &mut net,
        )?;
        match self.launch_networked(c, rec, paths, &mut net).await {
            Ok(pid) => {
                c.record().network = net;
                Ok(pid)
            }
            Err(e) => {
                self.networks.release(&rec.id, &mut net).await;
                Err(e)
            }
        }
    }

    async fn launch_networked(
        self: &Arc<Self>,
        c: &Arc<Container>,
        rec: &ContainerRecord,
        paths: &ContainerPaths,
        net: &mut crate::network::ContainerNetwork,
    ) -> Result<u32, ContainerError> {
        let joined = self.joined_netns(rec)?;
        // The container's network namespace comes made (from the pool), and a container on
        // networks is wired while the runtime creates the container, which joins it, instead
        // of after. The handle keeps the namespace alive until the container's init is in it.
        let ahead = if joined.is_none() && rec.host_config.network_mode.as_deref() != Some("host") {
            Some(Arc::new(self.networks.namespaces.take().map_err(|e| {
                ContainerError::StartFailed(crate::error::chain(&e))
            })?))
        } else {
            None
        };
        let netns = joined.or_else(|| {
            ahead.as_ref().map(|ns| {
                PathBuf::from(format!(
                    "/proc/{}/fd/{}",
                    std::process::id(),
                    ns.as_raw_fd()
                ))
            })
        });
        let etc_files = self.write_etc_files(rec, paths, net)?;
        let init = rec
            .host_config
            .init
            .unwrap_or(false)
            .then(find_init_binary)
            .flatten();
        if rec.host_config.init.unwrap_or(false) && init.is_none() {
            return Err(ContainerError::StartFailed(
                "--init: no init binary found (install tini: /usr/bin/tini-static)".into(),
            ));
        }
        let rootfs = paths.rootfs();
        let mut args = vec![rec.path.clone()];
        args.extend(rec.args.iter().cloned());
        let input = SpecInput {
            id: &rec.id,
            rootfs: &rootfs,
            args,
            env: rec.config.env.clone().unwrap_or_default(),
            cwd: rec
                .config
                .working_dir
                .clone()
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "/".into()),
            user: rec.config.user.clone().unwrap_or_default(),
            hostname: rec.config.hostname.clone().unwrap_or_default(),
            tty: rec.tty(),
            open_stdin: rec.config.open_stdin.unwrap_or(false),
            host: &rec.host_config,
            etc_files: &etc_files,
            cgroup_parent: &self.cfg.cgroup_parent,
            init_binary: init.as_deref(),
            netns: netns.as_deref(),
        };
        let (mut oci, warnings) = spec::build(&input)?;
        spec::precompile_seccomp(&mut oci, &self.cfg.run.join("seccomp"))?;
        let config = serde_json::to_vec(&oci)
            .map_err(|e| ContainerError::Invalid(format!("runtime spec: {e}")))?;
        // Written afresh by every start, so a crash cannot leave a stale one to be trusted: no
        // fsync on the way to the shim.
        std::fs::write(paths.dir.join("config.json"), &config)?;
        if !warnings.is_empty() {
            c.record().warnings = warnings;
        }

        // A stale exit record from the previous run must not be mistaken for this one's.
        let _ = std::fs::remove_dir_all(&paths.run_dir);
        std::fs::create_dir_all(&paths.run_dir)?;
        let state_root = self.cfg.run.join("runtime");
        let log = paths.log();
        let spawning = shim::ShimSpawn {
            id: &rec.id,
            bundle: &paths.dir,
            state_root: &state_root,
            dir: &paths.run_dir,
            log: &log,
            tty: rec.tty(),
            stdin: rec.config.open_stdin.unwrap_or(false),
            stdin_once: rec.config.stdin_once.unwrap_or(false),
        };
        let spawn = shim::spawn(&spawning);
        // `ahead` lives until the shim has reported: the init opens the namespace by its fd.
        let (pid, wired) = match ahead.as_ref().filter(|_| !net.endpoints.is_empty()) {
            Some(ns) => {
                let (spawned, wired) =
                    tokio::join!(spawn, self.networks.wire_ahead(&rec.id, ns.clone(), net));
                // A failed start drops the namespace, and the veths in it with it.
                (spawned?, wired)
            }
            None => {
                let pid = spawn.await?;
                (pid, self.networks.wire(&rec.id, pid, net).await)
            }
        };
        if let Err(e) = wired {
            // The process has not run yet: killing it ends the shim, which cleans up after it.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = shim::wait(&paths.run_dir).await;
            return Err(e.into());
        }
        self.connect_pending_attaches(c, paths).await;
        shim::release(&paths.run_dir).await?;
        Ok(pid)
    }

    /// `--network container:<id>`: the namespace of that container, which must be running.
    fn joined_netns(&self, rec: &ContainerRecord) -> Result<Option<PathBuf>, ContainerError> {
        let Some(other) = rec
            .host_config
            .network_mode
            .as_deref()
            .and_then(|m| m.strip_prefix("container:"))
        else {
            return Ok(None);
        };
        let target = self.registry().lookup(other)?;
        let t = target.snapshot();
        if !t.state.status.is_running() || t.state.pid == 0 {
            return Err(ContainerError::Conflict(format!(
                "cannot join network namespace of a non running container: container {} is {}",
                t.id,
                t.state.status.as_str()
            )));
        }
        Ok(Some(PathBuf::from(format!("/proc/{}/ns/net", t.state.pid))))
    }

    /// `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` for the container.
    fn write_etc_files(
        &self,
        rec: &ContainerRecord,
        paths: &ContainerPaths,
        net: &crate::network::ContainerNetwork,
    ) -> Result<Vec<(String, PathBuf)>, ContainerError> {
        // Written afresh by every start, like config.json: no fsync.
        let host_net = rec.host_config.network_mode.as_deref() == Some("host");
        let hostname = rec.config.hostname.clone().unwrap_or_default();
        let hostname_file = paths.dir.join("hostname");
        let hosts_file = paths.dir.join("hosts");
        let resolv_file = paths.dir.join("resolv.conf");
        // host-gateway: the container's own gateway, else the default bridge's.
        let host_gateway = net
            .gateway()
            .unwrap_or_else(|| self.networks.opts.bip.addr());
        if host_net {
            if std::fs::copy("/etc/hosts", &hosts_file).is_err() {
                std::fs::write(&hosts_file, LOCALHOST)?;
            }
        } else {
            let mut hosts = LOCALHOST.to_string();
            for extra in rec.host_config.extra_hosts.iter().flatten() {
                if let Some((name, ip)) = extra.split_once(':') {
                    let ip = if ip == "host-gateway" {
                        host_gateway.to_string()
                    } else {
                        ip.to_string()
                    };
                    hosts.push_str(&format!("{ip}\t{name}\n"));
                }
            }
            if let Some(ip) = net.ip() {
                hosts.push_str(&format!("{ip}\t{hostname}\n"));
            }
            write_replace(&hosts_file, hosts.as_bytes())?;
        }
        write_replace(&hostname_file, format!("{hostname}\n").as_bytes())?;
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        // On a user network the network's name server answers (and relays the rest).
        let embedded = net
            .endpoints
            .first()
            .filter(|e| !e.dns_names.is_empty())
            .and_then(|e| e.gateway);
        write_replace(
            &resolv_file,
            resolv_conf(&host_resolv, &rec.host_config, host_net, embedded).as_bytes(),
        )?;
        Ok(vec![
            ("/etc/hostname".into(), hostname_file),
            ("/etc/hosts".into(), hosts_file),
            ("/etc/resolv.conf".into(), resolv_file),
        ])
    }
}

const LOCALHOST: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// The container's resolv.conf: the host's, with `--dns`/`--dns-search`/`--dns-option`
/// applied. Loopback resolvers cannot be reached from a private network namespace, so they
/// are dropped unless the container shares the host's network.
fn resolv_conf(
    host: &str,
    hc: &wharf_api::models::HostConfig,
    host_net: bool,
    embedded: Option<std::net::Ipv4Addr>,
) -> String {
    let mut out = String::new();
    let mut dns = hc.dns.clone().unwrap_or_default();
    if dns.is_empty()
        && let Some(ns) = embedded
    {
        dns.push(ns.to_string());
    }
    let search = hc.dns_search.clone().unwrap_or_default();
    let options = hc.dns_options.clone().unwrap_or_default();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                let addr = words.next().unwrap_or_default();
                let loopback = addr.starts_with("127.") || addr == "::1";
                if dns.is_empty() && (host_net || !loopback) {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            Some("search") if !search.is_empty() => {}
            Some("options") if !options.is_empty() => {}
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for d in &dns {
        out.push_str(&format!("nameserver {d}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// The init binary `--init` runs as pid 1 (Docker's is tini, shipped as docker-init).
fn find_init_binary() -> Option<PathBuf> {
    [
        "/usr/bin/tini-static",
        "/usr/sbin/docker-init",
        "/usr/libexec/docker/docker-init",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolvers_are_dropped_off_host_network() {
        let host = "nameserver 127.0.0.53\nnameserver 10.0.0.1\nsearch lan\n";
        let hc = wharf_api::models::HostConfig::default();
        assert_eq!(
            resolv_conf(host, &hc, false, None),
            "nameserver 10.0.0.1\nsearch lan\n"
        );
        assert_eq!(resolv_conf(host, &hc, true, None), host);
        assert_eq!(
            resolv_conf(host, &hc, false, Some(std::net::Ipv4Addr::new(10, 1, 0, 1))),
            "search lan\nnameserver 10.1.0.1\n"
        );
        let hc = wharf_api::models::HostConfig {
            dns: Some(vec!["1.1.1.1".into()]),
            ..Default::default()
        };
        assert_eq!(
            resolv_conf(host, &hc, false, None),
            "search lan\nnameserver 1.1.1.1\n"
        );
    }

    #[test]
    fn start_failures_map_to_docker_exit_codes() {
        assert_eq!(
            start_failure_code("exec: \"nope\": executable file not found in $PATH"),
            127
        );
        assert_eq!(
            start_failure_code("exec /etc/passwd: permission denied"),
            126
        );
        assert_eq!(start_failure_code("something else"), 128);
    }
}
