//! Interchange with real tools: Docker (Debian's dockerd on a temporary root), skopeo and
//! umoci. Each part is skipped, with a message, when its tool is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod images_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use images_common::{RawTar, TestStore, busybox_tar};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A tar of directory `dir`'s contents (an OCI layout on disk into an archive).
fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}

/// Debian's dockerd on a temporary root, stopped and cleaned up when dropped.
struct Dockerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Dockerd {
    fn start() -> Dockerd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("d.sock").display()))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let daemon = Dockerd { dir, child };
        // Readiness, not timing: poll until it answers, giving up after a generous bound.
        for _ in 0..600 {
            if daemon
                .docker()
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return daemon;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let log =
            std::fs::read_to_string(daemon.dir.path().join("dockerd.log")).unwrap_or_default();
        panic!("dockerd did not come up:\n{log}");
    }

    fn docker(&self) -> Command {
        let mut c = Command::new("/usr/bin/docker");
        c.env(
            "DOCKER_HOST",
            format!("unix://{}", self.dir.path().join("d.sock").display()),
        );
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
        // dockerd unmounts its own overlays at shutdown; anything left is detached here so
        // the directory can go.
        let prefix = self.dir.path().to_string_lossy().into_owned();
        if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut targets: Vec<&str> = info
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|t| t.starts_with(&prefix))
                .collect();
            targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
            for t in targets {
                let _ = rustix::mount::unmount(t, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
}

#[test]
fn docker_save_loads_here_and_our_save_runs_in_docker() {
    if !have("dockerd") || !Path::new("/usr/bin/docker").exists() {
        eprintln!("skipping: Debian's dockerd and docker CLI are not installed");
        return;
    }
    let Some(busybox) = busybox_tar() else {
        return;
    };
    let dockerd = Dockerd::start();

    // docker import + docker save (docker-archive, pre-25 layout) -> our load.
    let id = run(dockerd
        .docker()
        .args(["import", "-c", r#"CMD ["sh"]"#, "-c", "ENV FOO=bar"])
        .arg(&busybox)
        .arg("dbox:1"));
    let id = id.trim().to_string();
    let saved = dockerd.path("docker-saved.tar");
    run(dockerd
        .docker()
        .args(["save", "-o"])
        .arg(&saved)
        .arg("dbox:1"));
    let t = TestStore::new();
    let lines = t.load(&mut std::fs::File::open(&saved).unwrap()).unwrap();
    assert_eq!(lines, vec!["Loaded image: dbox:1"]);
    let image = t.resolve("dbox:1").unwrap();
    assert_eq!(
        image.id, id,
        "the config bytes are kept exactly, so the id is Docker's"
    );
    assert_eq!(image.config.cmd, Some(vec!["sh".to_string()]));
    assert!(
        image
            .config
            .env
            .as_ref()
            .unwrap()
            .contains(&"FOO=bar".to_string())
    );
    let lowers = t.lower_dirs(&image).unwrap();
    assert!(lowers[0].join("bin/busybox").is_file());

    // Our import + our save (both formats in one tar, two images) -> docker load -> run.
    let ours = t
        .import(
            &mut std::fs::File::open(&busybox).unwrap(),
            &[r#"CMD ["echo", "from-wharf"]"#.to_string()],
            Some("wbox:1"),
            None,
        )
        .unwrap();
    let out = dockerd.path("wharf-saved.tar");
    let mut f = std::fs::File::create(&out).unwrap();
    t.save(&["wbox:1".to_string(), "dbox:1".to_string()], &mut f)
        .unwrap();
    drop(f);
    run(dockerd.docker().args(["rmi", "dbox:1"]));
    let loaded = run(dockerd.docker().args(["load", "-i"]).arg(&out));
    assert!(loaded.contains("Loaded image: wbox:1"), "{loaded}");
    assert!(loaded.contains("Loaded image: dbox:1"), "{loaded}");
    let docker_id = run(dockerd
        .docker()
        .args(["image", "inspect", "-f", "{{.Id}}", "wbox:1"]));
    assert_eq!(docker_id.trim(), ours.id);
    let hi = run(dockerd
        .docker()
        .args(["run", "--rm", "--network", "none", "wbox:1"]));
    assert_eq!(hi, "from-wharf\n");
    let hi = run(dockerd.docker().args([
        "run",
        "--rm",
        "--network",
        "none",
        "dbox:1",
        "sh",
        "-c",
        "echo $FOO",
    ]));
    assert_eq!(hi, "bar\n");

    // And back: docker's save of what it loaded from us loads here with the same id.
    let again = dockerd.path("again.tar");
    run(dockerd
        .docker()
        .args(["save", "-o"])
        .arg(&again)
        .arg("wbox:1"));
    let t2 = TestStore::new();
    t2.load(&mut std::fs::File::open(&again).unwrap()).unwrap();
    assert_eq!(t2.resolve("wbox:1").unwrap().id, ours.id);
}

#[test]
fn skopeo_oci_layouts_load_and_read_our_save() {
    if !have("skopeo") {
        eprintln!("skipping: skopeo is not installed");
        return;
    }
    let t = TestStore::new();
    let layer = RawTar::new()
        .dir("etc/", 0o755)
        .file("etc/motd", b"hello from a layer\n")
        .finish();
    let image = t
        .import(
            &mut &layer[..],
            &[r#"CMD ["cat", "/etc/motd"]"#.to_string()],
            Some("sko:1"),
            None,
        )
        .unwrap();
    let dir = t.base.path();
    let saved = dir.join("saved.tar");
    t.save(
        &["sko:1".to_string()],
        &mut std::fs::File::create(&saved).unwrap(),
    )
    .unwrap();

    // Our save read as a docker-archive, written as OCI layouts, plain and compressed.
    for (name, extra) in [
        ("plain", vec![]),
        (
            "gzip",
            vec!["--dest-compress", "--dest-compress-format", "gzip"],
        ),
        (
            "zstd",
            vec!["--dest-compress", "--dest-compress-format", "zstd"],
        ),
    ] {
        let layout = dir.join(format!("layout-{name}"));
        run(Command::new("skopeo")
            .args(["copy", "--insecure-policy"])
            .args(&extra)
            .arg(format!("docker-archive:{}", saved.display()))
            .arg(format!("oci:{}:localhost/sko:{name}", layout.display())));
        let other = TestStore::new();
        let lines = other.load(&mut &tar_dir(&layout)[..]).unwrap();
        assert_eq!(lines, vec![format!("Loaded image: localhost/sko:{name}")]);
        let loaded = other.resolve(&format!("localhost/sko:{name}")).unwrap();
        // skopeo rewrites the config as an OCI config, so the id is its own; the content is ours.
        assert_eq!(loaded.config.cmd, image.config.cmd, "{name}");
        let fs = other.lower_dirs(&loaded).unwrap();
        assert_eq!(
            std::fs::read(fs[0].join("etc/motd")).unwrap(),
            b"hello from a layer\n"
        );
    }

    // Our save read as an OCI archive.
    let copy = dir.join("from-oci-archive");
    run(Command::new("skopeo")
        .args(["copy", "--insecure-policy"])
        .arg(format!("oci-archive:{}", saved.display()))
        .arg(format!("dir:{}", copy.display())));
    assert!(copy.join("manifest.json").is_file());
}

#[test]
fn umoci_layouts_load() {
    if !have("umoci") {
        eprintln!("skipping: umoci is not installed");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let layout = base.path().join("layout");
    let src = base.path().join("file.txt");
    std::fs::write(&src, "inserted by umoci\n").unwrap();
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci")
        .args(["new", "--image"])
        .arg(format!("{}:v1", layout.display())));
    run(Command::new("umoci")
        .args(["insert", "--image"])
        .arg(format!("{}:v1", layout.display()))
        .arg(&src)
        .arg("/data/file.txt"));
    run(Command::new("umoci")
        .args(["config", "--image"])
        .arg(format!("{}:v1", layout.display()))
        .args(["--config.cmd", "cat", "--config.cmd", "/data/file.txt"]));
    let t = TestStore::new();
    let lines = t.load(&mut &tar_dir(&layout)[..]).unwrap();
    // umoci names the image by tag only ("v1"): there is no repository, so it loads untagged.
    assert_eq!(lines.len(), 1);
    let id = lines[0].strip_prefix("Loaded image ID: ").unwrap();
    let image = t.resolve(id).unwrap();
    assert_eq!(
        image.config.cmd,
        Some(vec!["cat".to_string(), "/data/file.txt".to_string()])
    );
    let lowers = t.lower_dirs(&image).unwrap();
    assert_eq!(
        std::fs::read_to_string(lowers[0].join("data/file.txt")).unwrap(),
        "inserted by umoci\n"
    );
}
