//! Registry pull and push through the daemon, against Debian's docker-registry started by
//! each test on a free loopback port: wharf, the real docker CLIs, Debian's dockerd and
//! skopeo exchanging images; htpasswd logins; platform choice; a pull that survives a
//! `kill -9` of the daemon. The registries, proxies and servers are the engine tests' own
//! (crates/engine/tests/distribution_common).

#[path = "../../crates/engine/tests/images_common/mod.rs"]
mod images_common;

#[path = "../../crates/engine/tests/distribution_common/mod.rs"]
pub(crate) mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{
    HttpServer, Registry, Response, TokenServer, put_blob, put_image, put_manifest, stalling_proxy,
};
use images_common::RawTar;

use crate::harness::{DOCKER20, DOCKER28, Daemon, busybox_tar, ok, stderr, stdout, unique_dir};

/// A directory for Docker's config.json, removed when dropped.
struct ConfigDir(PathBuf);

impl ConfigDir {
    fn new() -> ConfigDir {
        ConfigDir(unique_dir("wharf-test-docker-config"))
    }
}

impl Drop for ConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `wharf` against `d`, reading and writing credentials in `cfg`.
fn wharf(d: &Daemon, cfg: &Path, args: &[&str]) -> Output {
    d.cmd(args)
        .env("DOCKER_CONFIG", cfg)
        .output()
        .expect("run wharf")
}

/// The digest a push reported (`v1: digest: sha256:... size: N`).
fn pushed_digest(out: &str) -> String {
    out.lines()
        .find_map(|l| l.split(": digest: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in push output:\n{out}"))
        .to_string()
}

fn image_id(d: &Daemon, cfg: &Path, name: &str) -> String {
    ok(wharf(
        d,
        cfg,
        &["image", "inspect", "--format", "{{.Id}}", name],
    ))
}

fn curl_daemon(d: &Daemon, path: &str) -> serde_json::Value {
    let out = Command::new("curl")
        .args(["-sf", "--unix-socket"])
        .arg(d.sock())
        .arg(format!("http://wharf{path}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {path}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn push_then_pull_on_a_clean_root_runs_and_skopeo_reads_it() {
    let reg = Registry::start();
    let cfg = ConfigDir::new();
    let a = Daemon::with_busybox();
    let name = format!("{}/test/bb:v1", reg.addr);
    ok(wharf(&a, &cfg.0, &["tag", "busybox", &name]));
    let out = ok(wharf(&a, &cfg.0, &["push", &name]));
    assert!(
        out.contains(&format!(
            "The push refers to repository [{}/test/bb]",
            reg.addr
        )),
        "{out}"
    );
    assert!(out.contains(": Pushed"), "{out}");
    let digest = pushed_digest(&out);
    // Again, quietly: nothing to upload, and only the reference is printed.
    assert_eq!(ok(wharf(&a, &cfg.0, &["push", "-q", &name])), name);
    let id = image_id(&a, &cfg.0, &name);

    // A clean root pulls it: the same image, the same digest, and it runs.
    let b = Daemon::start();
    let out = ok(wharf(&b, &cfg.0, &["pull", &name]));
    assert!(out.contains(": Pull complete"), "{out}");
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {name}")),
        "{out}"
    );
    assert_eq!(out.lines().last(), Some(name.as_str()));
    assert_eq!(image_id(&b, &cfg.0, &name), id);
    let digests = ok(wharf(
        &b,
        &cfg.0,
        &[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            &name,
        ],
    ));
    assert!(
        digests.contains(&format!("{}/test/bb@{digest}", reg.addr)),
        "{digests}"
    );
    assert_eq!(
        ok(wharf(&b, &cfg.0, &["run", "--rm", &name, "echo", "pulled"])),
        "pulled"
    );
    assert_eq!(ok(wharf(&b, &cfg.0, &["pull", "-q", &name])), name);
    let by_digest = format!("{}/test/bb@{digest}", reg.addr);
    assert_eq!(
        ok(wharf(&b, &cfg.0, &["pull", "-q", &by_digest])),
        by_digest
    );

    // `run` pulls what is missing (on stderr), unless told not to.
    let v2 = format!("{}/test/bb:v2", reg.addr);
    ok(wharf(&a, &cfg.0, &["tag", "busybox", &v2]));
    ok(wharf(&a, &cfg.0, &["push", "-q", &v2]));
    let out = wharf(&b, &cfg.0, &["run", "--rm", "--pull", "never", &v2, "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let out = wharf(&b, &cfg.0, &["run", "--rm", &v2, "echo", "fetched"]);
    assert_eq!(stdout(&out), "fetched\n", "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("Unable to find image '{v2}' locally")),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("Downloaded newer image"),
        "{}",
        stderr(&out)
    );
    let out = wharf(
        &b,
        &cfg.0,
        &["run", "--rm", "--pull", "always", &v2, "true"],
    );
    assert!(
        stderr(&out).contains("Image is up to date"),
        "{}",
        stderr(&out)
    );

    // Every tag of the repository.
    let c = Daemon::start();
    let repo = format!("{}/test/bb", reg.addr);
    let out = ok(wharf(&c, &cfg.0, &["pull", "-a", &repo]));
    assert_eq!(out.lines().last(), Some(repo.as_str()), "{out}");
    let tags = ok(wharf(
        &c,
        &cfg.0,
        &["images", "--format", "{{.Tag}}", &repo],
    ));
    let mut tags: Vec<&str> = tags.lines().collect();
    tags.sort();
    assert_eq!(tags, ["v1", "v2"]);

    // The registry side of an image, as the API reports it.
    let inspect = curl_daemon(&b, &format!("/distribution/{name}/json"));
    assert_eq!(inspect["Descriptor"]["digest"], digest.as_str());
    assert_eq!(inspect["Platforms"][0]["architecture"], "amd64");

    // A missing tag fails clearly, before anything is streamed.
    let out = wharf(&c, &cfg.0, &["pull", &format!("{}/test/bb:nope", reg.addr)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("manifest unknown"),
        "{}",
        stderr(&out)
    );

    // skopeo reads what wharf pushed.
    let out = ok(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{name}"))
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Digest"], digest.as_str());
    let oci = unique_dir("wharf-test-skopeo");
    ok(Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{name}"))
        .arg(format!("oci:{}:bb", oci.join("layout").display()))
        .output()
        .unwrap());
    assert!(oci.join("layout/index.json").is_file());
    std::fs::remove_dir_all(&oci).unwrap();
}

/// `docker push` and `docker pull` with DOCKER_HOST at wharf: both work and draw progress.
fn docker_through_wharf(docker: &str, repo: &str) {
    if !Path::new(docker).exists() {
        eprintln!("skipping: {docker} is not installed");
        return;
    }
    let reg = Registry::start();
    let name = format!("{}/{repo}:v1", reg.addr);
    let a = Daemon::with_busybox();
    ok(a.docker(docker, &["tag", "busybox", &name]));
    let out = ok(a.docker(docker, &["push", &name]));
    assert!(out.contains("Pushed"), "{docker} push: {out}");
    let digest = pushed_digest(&out);
    ok(a.docker(docker, &["rmi", &name]));
    let out = ok(a.docker(docker, &["pull", &name]));
    assert!(
        out.contains(&format!("Digest: {digest}")) && out.contains("Status: "),
        "{docker} pull: {out}"
    );

    // On a clean root, under a terminal: docker draws the transfer from our progress.
    let b = Daemon::start();
    let tty = Command::new("script")
        .args(["-qec", &format!("{docker} pull {name}"), "/dev/null"])
        .env("DOCKER_HOST", b.host())
        .env(
            "DOCKER_CONFIG",
            b.root.parent().unwrap().join("docker-config"),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = stdout(&tty);
    assert!(tty.status.success(), "{docker} pull under a tty: {text}");
    assert!(
        text.contains("Downloading") || text.contains("Extracting"),
        "{docker} pull under a tty drew no progress: {text}"
    );
    assert!(text.contains("Pull complete"), "{text}");
    assert_eq!(
        ok(b.docker(docker, &["run", "--rm", &name, "echo", "via docker"])),
        "via docker"
    );
}

#[test]
fn docker_cli_28_pushes_and_pulls_through_wharf() {
    docker_through_wharf(DOCKER28, "dk28/bb");
}

#[test]
fn docker_cli_20_pushes_and_pulls_through_wharf() {
    docker_through_wharf(DOCKER20, "dk20/bb");
}

/// Debian's dockerd on a temporary root, stopped and cleaned up when dropped.
pub(crate) struct Dockerd {
    dir: PathBuf,
    child: Child,
}

impl Dockerd {
    pub(crate) fn start() -> Dockerd {
        let dir = unique_dir("wharf-test-dockerd");
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("d.sock").display()))
            .arg("--pidfile")
            .arg(dir.join("pid"))
            .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Dockerd { dir, child };
        // Readiness, not timing: poll until it answers, within a generous bound.
        for _ in 0..600 {
            if d.docker(&["version"]).status.success() {
                return d;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "dockerd did not come up:\n{}",
            std::fs::read_to_string(d.dir.join("dockerd.log")).unwrap_or_default()
        );
    }

    pub(crate) fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER20)
            .args(args)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.dir.join("d.sock").display()),
            )
            .env("DOCKER_CONFIG", self.dir.join("config"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
        crate::harness::unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn dockerd_and_wharf_exchange_images_through_a_registry() {
    if Command::new("dockerd").arg("--version").output().is_err() || !Path::new(DOCKER20).exists() {
        eprintln!("skipping: Debian's dockerd and docker CLI are not installed");
        return;
    }
    let reg = Registry::start();
    let cfg = ConfigDir::new();
    let dockerd = Dockerd::start();

    // Docker pushes, wharf pulls and runs.
    let from_docker = format!("{}/from/docker:v1", reg.addr);
    let tar = busybox_tar().to_str().unwrap();
    ok(dockerd.docker(&["import", "-c", r#"CMD ["sh"]"#, tar, &from_docker]));
    let out = ok(dockerd.docker(&["push", &from_docker]));
    let digest = pushed_digest(&out);
    let w = Daemon::start();
    let out = ok(wharf(&w, &cfg.0, &["pull", &from_docker]));
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert_eq!(
        ok(wharf(
            &w,
            &cfg.0,
            &["run", "--rm", &from_docker, "echo", "from docker"]
        )),
        "from docker"
    );

    // wharf pushes (its own import), Docker pulls and runs.
    let b = Daemon::with_busybox();
    let from_wharf = format!("{}/from/wharf:v1", reg.addr);
    ok(wharf(&b, &cfg.0, &["tag", "busybox", &from_wharf]));
    let digest = pushed_digest(&ok(wharf(&b, &cfg.0, &["push", &from_wharf])));
    let out = ok(dockerd.docker(&["pull", &from_wharf]));
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert_eq!(
        ok(dockerd.docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            &from_wharf,
            "echo",
            "from wharf"
        ])),
        "from wharf"
    );
}

#[test]
fn htpasswd_registry_needs_a_login_that_docker_shares() {
    let reg = Registry::start_htpasswd("alice", "s3cret");
    let cfg = ConfigDir::new();
    let d = Daemon::with_busybox();
    let name = format!("{}/private/bb:v1", reg.addr);
    ok(wharf(&d, &cfg.0, &["tag", "busybox", &name]));

    let out = wharf(&d, &cfg.0, &["push", &name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("authentication required"),
        "push without login: {}",
        stderr(&out)
    );

    let login = |password: &str| login_stdin(&d, &cfg, &reg.addr, "alice", password);
    let refused = login("wrong");
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("401 Unauthorized"),
        "{}",
        stderr(&refused)
    );
    assert!(
        !cfg.0.join("config.json").exists(),
        "a refused login stores nothing"
    );
    let accepted = login("s3cret");
    assert_eq!(ok(accepted), "Login Succeeded");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cfg.0.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["auths"][&reg.addr]["auth"], "YWxpY2U6czNjcmV0",
        "base64 of alice:s3cret"
    );

    let out = ok(wharf(&d, &cfg.0, &["push", &name]));
    let digest = pushed_digest(&out);

    // docker reads the credentials wharf stored, and sends them through the wharf daemon.
    if Path::new(DOCKER28).exists() {
        let e = Daemon::start();
        let anonymous = e.docker(DOCKER28, &["pull", &name]);
        assert!(!anonymous.status.success(), "pulled without credentials");
        let out = e
            .docker_cmd(DOCKER28, &["pull", &name])
            .env("DOCKER_CONFIG", &cfg.0)
            .output()
            .unwrap();
        assert!(
            stdout(&out).contains(&format!("Digest: {digest}")),
            "{}{}",
            stdout(&out),
            stderr(&out)
        );
    }

    assert_eq!(
        ok(wharf(&d, &cfg.0, &["logout", &reg.addr])),
        format!("Removing login credentials for {}", reg.addr)
    );
    assert_eq!(
        ok(wharf(&d, &cfg.0, &["logout", &reg.addr])),
        format!("Not logged in to {}", reg.addr)
    );
    let out = wharf(&d, &cfg.0, &["push", &name]);
    assert!(!out.status.success(), "pushed after logout");
}

fn marker_layer(text: &str) -> Vec<u8> {
    RawTar::new().file("arch", text.as_bytes()).finish()
}

#[test]
fn multi_arch_index_defaults_to_amd64_and_platform_picks_another() {
    let reg = Registry::start();
    let cfg = ConfigDir::new();
    let busybox = std::fs::read(busybox_tar()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (amd, amd_config, _, amd_len) = rt.block_on(put_image(
        &reg.addr,
        "multi",
        None,
        "amd64",
        &[busybox, marker_layer("amd64")],
    ));
    let (arm, arm_config, _, arm_len) = rt.block_on(put_image(
        &reg.addr,
        "multi",
        None,
        "arm64",
        &[marker_layer("arm64")],
    ));
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm,
             "size": arm_len, "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd,
             "size": amd_len, "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    }))
    .unwrap();
    let index_digest = rt.block_on(put_manifest(
        &reg.addr,
        "multi",
        "latest",
        "application/vnd.oci.image.index.v1+json",
        &index,
    ));
    drop(rt);
    let name = format!("{}/multi", reg.addr);

    let d = Daemon::start();
    let out = ok(wharf(&d, &cfg.0, &["pull", &name]));
    assert!(out.starts_with("Using default tag: latest"), "{out}");
    assert!(out.contains(&format!("Digest: {index_digest}")), "{out}");
    assert_eq!(image_id(&d, &cfg.0, &name), amd_config);
    assert_eq!(
        ok(wharf(&d, &cfg.0, &["run", "--rm", &name, "cat", "/arch"])),
        "amd64"
    );

    let out = ok(wharf(
        &d,
        &cfg.0,
        &["pull", "--platform", "linux/arm64", &name],
    ));
    assert!(out.contains("Downloaded newer image"), "{out}");
    assert_eq!(image_id(&d, &cfg.0, &name), arm_config);
    let arch = ok(wharf(
        &d,
        &cfg.0,
        &["image", "inspect", "--format", "{{.Architecture}}", &name],
    ));
    assert_eq!(arch, "arm64");
    let out = wharf(&d, &cfg.0, &["run", "--rm", &name, "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("linux/arm64") && stderr(&out).contains("cannot run it"),
        "{}",
        stderr(&out)
    );

    let out = wharf(&d, &cfg.0, &["pull", "--platform", "linux/s390x", &name]);
    assert!(
        stderr(&out).contains("no matching manifest for linux/s390x"),
        "{}",
        stderr(&out)
    );
    let inspect = curl_daemon(&d, &format!("/distribution/{name}:latest/json"));
    assert_eq!(inspect["Descriptor"]["digest"], index_digest.as_str());
    let mut archs: Vec<String> = inspect["Platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["architecture"].as_str().unwrap().to_string())
        .collect();
    archs.sort();
    assert_eq!(archs, ["amd64", "arm64"]);
}

fn sha256_hex(path: &Path) -> String {
    let out = ok(Command::new("sha256sum").arg(path).output().unwrap());
    out.split_whitespace().next().unwrap().to_string()
}

#[test]
fn pull_resumes_after_kill_9_of_the_daemon() {
    let reg = Registry::start();
    let cfg = ConfigDir::new();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let big_layer = RawTar::new()
        .dir("data", 0o755)
        .file("data/big", &big)
        .finish();
    let busybox = std::fs::read(busybox_tar()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_, _, digests, _) = rt.block_on(put_image(
        &reg.addr,
        "resume",
        Some("latest"),
        "amd64",
        &[busybox, big_layer, marker_layer("amd64")],
    ));
    drop(rt);
    // The proxy is another loopback name for the same registry; it holds the big layer back.
    let release = Arc::new(AtomicBool::new(false));
    let proxy = stalling_proxy(reg.addr.clone(), digests[1].clone(), release.clone());
    let short = |d: &str| d.trim_start_matches("sha256:")[..12].to_string();

    let mut d = Daemon::start();
    let mut pull = d
        .cmd(&["pull", &format!("{}/resume:latest", proxy.addr)])
        .env("DOCKER_CONFIG", &cfg.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(pull.stdout.take().unwrap()).lines();
    let mut complete = Vec::new();
    for line in lines {
        let line = line.unwrap();
        if let Some(id) = line.strip_suffix(": Pull complete") {
            complete.push(id.to_string());
            if complete.len() == 2 {
                break;
            }
        }
    }
    complete.sort();
    let mut small = vec![short(&digests[0]), short(&digests[2])];
    small.sort();
    assert_eq!(complete, small, "only the small layers can complete");
    d.kill9();
    assert!(
        !pull.wait().unwrap().success(),
        "the pull outlived its daemon"
    );
    release.store(true, Ordering::SeqCst);

    // After the restart nothing is tagged, and every visible blob is whole.
    d.spawn();
    assert_eq!(ok(wharf(&d, &cfg.0, &["images", "-q"])), "");
    let blobs = d.root.join("content/blobs/sha256");
    let names: Vec<String> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.contains(&digests[1].trim_start_matches("sha256:").to_string()));
    for n in &names {
        assert_eq!(&sha256_hex(&blobs.join(n)), n, "a partial blob is visible");
    }

    // Pulling again reuses the verified layers and fetches only the big one.
    let name = format!("{}/resume:latest", reg.addr);
    let out = ok(wharf(&d, &cfg.0, &["pull", &name]));
    for id in &small {
        assert!(out.contains(&format!("{id}: Already exists")), "{out}");
    }
    assert!(
        out.contains(&format!("{}: Pull complete", short(&digests[1]))),
        "{out}"
    );
    assert_eq!(
        ok(wharf(
            &d,
            &cfg.0,
            &["run", "--rm", &name, "sh", "-c", "wc -c < /data/big"]
        )),
        big.len().to_string()
    );
    drop(proxy);
}

/// What a refused pull must leave as it was: images, tags, snapshots, blobs, ingest, leases.
fn store_state(d: &Daemon, cfg: &Path) -> Vec<String> {
    let mut v = vec![ok(wharf(
        d,
        cfg,
        &[
            "images",
            "-a",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Repository}}:{{.Tag}}",
        ],
    ))];
    for sub in [
        "snapshots",
        "content/blobs/sha256",
        "content/ingest",
        "content/leases",
    ] {
        let mut names: Vec<String> = std::fs::read_dir(d.root.join(sub))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        v.push(format!("{sub}: {}", names.join(" ")));
    }
    v
}

#[test]
fn bad_content_fails_the_pull_and_leaves_the_store_unchanged() {
    let reg = Registry::start();
    let cfg = ConfigDir::new();
    let d = Daemon::with_busybox();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let layer = |name: &str, data: &[u8]| {
        RawTar::new()
            .dir("data", 0o755)
            .file(&format!("data/{name}"), data)
            .finish()
    };
    // Something pulled already, so "unchanged" means more than "empty".
    rt.block_on(put_image(
        &reg.addr,
        "good",
        Some("v1"),
        "amd64",
        &[
            std::fs::read(busybox_tar()).unwrap(),
            layer("good", b"good"),
        ],
    ));
    ok(wharf(
        &d,
        &cfg.0,
        &["pull", "-q", &format!("{}/good:v1", reg.addr)],
    ));
    let before = store_state(&d, &cfg.0);
    let refused = |name: String, words: &str| {
        let out = wharf(&d, &cfg.0, &["pull", &name]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stdout(&out));
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(text.contains(words), "{name}: want {words:?} in {text}");
        assert_eq!(store_state(&d, &cfg.0), before, "{name} changed the store");
    };

    // A layer whose bytes do not match its digest (same length).
    let (_, _, digests, _) = rt.block_on(put_image(
        &reg.addr,
        "baddigest",
        Some("v1"),
        "amd64",
        &[layer("x", b"fine"), layer("y", &vec![3u8; 50_000])],
    ));
    let path = reg.blob_data(&digests[1]);
    let mut data = std::fs::read(&path).unwrap();
    let n = data.len();
    data[n / 2] ^= 0xff;
    std::fs::write(&path, &data).unwrap();
    refused(
        format!("{}/baddigest:v1", reg.addr),
        &format!("blob {} does not match its digest", digests[1]),
    );

    // A truncated layer.
    let (_, _, digests, _) = rt.block_on(put_image(
        &reg.addr,
        "truncated",
        Some("v1"),
        "amd64",
        &[layer("z", &vec![7u8; 100_000])],
    ));
    let path = reg.blob_data(&digests[0]);
    let data = std::fs::read(&path).unwrap();
    std::fs::write(&path, &data[..data.len() / 2]).unwrap();
    refused(
        format!("{}/truncated:v1", reg.addr),
        &format!("blob {} is truncated", digests[0]),
    );

    // A config that is not JSON.
    let config = rt.block_on(put_blob(&reg.addr, "notjson", b"this is not json"));
    let l = images_common::gzip(&layer("q", b"q"));
    let ld = rt.block_on(put_blob(&reg.addr, "notjson", &l));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": 16},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": ld, "size": l.len()}],
    }))
    .unwrap();
    rt.block_on(put_manifest(
        &reg.addr,
        "notjson",
        "v1",
        "application/vnd.oci.image.manifest.v1+json",
        &manifest,
    ));
    refused(
        format!("{}/notjson:v1", reg.addr),
        &format!("image config {config} is not JSON"),
    );
    drop(rt);

    // A manifest over 4 MiB, from a server that sends one (the registry refuses to store it).
    let huge = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": 16},
        "layers": [],
        "annotations": {"padding": "x".repeat(5 << 20)},
    }))
    .unwrap();
    let huge_digest = wharf_engine::content::Digest::of(&huge).to_string();
    let fake = HttpServer::start(move |req| {
        if req.path == "/v2/" {
            return Response::new(200, "{}");
        }
        if req.path.ends_with("/manifests/v1") {
            return Response::new(200, huge.clone())
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .header("Docker-Content-Digest", &huge_digest);
        }
        Response::new(404, "{}")
    });
    refused(
        format!("{}/huge:v1", fake.addr),
        "over the 4194304-byte limit",
    );
    // What was there before still runs.
    assert_eq!(
        ok(wharf(
            &d,
            &cfg.0,
            &[
                "run",
                "--rm",
                &format!("{}/good:v1", reg.addr),
                "cat",
                "/data/good"
            ]
        )),
        "good"
    );
}

/// `wharf login -u <user> --password-stdin <addr>` with `password` on stdin.
fn login_stdin(d: &Daemon, cfg: &ConfigDir, addr: &str, user: &str, password: &str) -> Output {
    use std::io::Write;
    let mut child = d
        .cmd(&["login", "-u", user, "--password-stdin", addr])
        .env("DOCKER_CONFIG", &cfg.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn bearer_token_registry_works_after_login() {
    if !common::have("openssl") {
        eprintln!("skipping: openssl is needed to sign tokens");
        return;
    }
    let tokens = TokenServer::start();
    let reg = Registry::start_token(&tokens.realm(), &tokens.cert);
    let cfg = ConfigDir::new();
    let d = Daemon::with_busybox();
    let name = format!("{}/tok/bb:v1", reg.addr);
    ok(wharf(&d, &cfg.0, &["tag", "busybox", &name]));
    // Anonymous tokens grant nothing.
    let out = wharf(&d, &cfg.0, &["push", &name]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("authentication required"),
        "push without login: {}",
        stderr(&out)
    );
    let login = |password: &str| login_stdin(&d, &cfg, &reg.addr, "alice", password);
    let refused = login("wrong");
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        !cfg.0.join("config.json").exists(),
        "a refused login stored something"
    );
    assert_eq!(ok(login("s3cret")), "Login Succeeded");
    let digest = pushed_digest(&ok(wharf(&d, &cfg.0, &["push", &name])));
    // A clean root pulls with the stored credentials; anonymous pulls are refused.
    let b = Daemon::start();
    let anon = ConfigDir::new();
    let out = wharf(&b, &anon.0, &["pull", &name]);
    assert_eq!(out.status.code(), Some(1), "pulled anonymously");
    assert_eq!(ok(wharf(&b, &anon.0, &["images", "-q"])), "");
    let out = ok(wharf(&b, &cfg.0, &["pull", &name]));
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert_eq!(
        ok(wharf(
            &b,
            &cfg.0,
            &["run", "--rm", &name, "echo", "via token"]
        )),
        "via token"
    );
    // docker, reading the same credentials, goes through the token dance too.
    if Path::new(DOCKER28).exists() {
        let e = Daemon::start();
        let out = e
            .docker_cmd(DOCKER28, &["pull", &name])
            .env("DOCKER_CONFIG", &cfg.0)
            .output()
            .unwrap();
        assert!(
            stdout(&out).contains(&format!("Digest: {digest}")),
            "{}{}",
            stdout(&out),
            stderr(&out)
        );
    }
}
