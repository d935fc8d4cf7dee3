#![allow(dead_code)]
//! A wharf daemon on a temporary root, and helpers to drive it with wharf and docker CLIs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const WHARF: &str = env!("CARGO_BIN_EXE_wharf");
pub const DOCKER28: &str = "/usr/local/bin/docker";
pub const DOCKER20: &str = "/usr/bin/docker";

/// The busybox rootfs tar made by scripts/mkbusybox.sh, once per test process.
pub fn busybox_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("busybox-rootfs.tar");
        if !out.exists() {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mkbusybox.sh");
            let status = Command::new(script)
                .arg(&out)
                .status()
                .expect("run mkbusybox.sh");
            assert!(status.success(), "mkbusybox.sh failed");
        }
        out
    })
}

pub struct Daemon {
    pub root: PathBuf,
    pub run: PathBuf,
    child: Option<Child>,
    /// This daemon's default bridge, its address and pool: parallel daemons must not share.
    pub bridge: String,
    pub bip: String,
    pub pool: String,
    /// Extra environment for the daemon (and so its shims).
    pub env: Vec<(String, String)>,
}

impl Daemon {
    /// A daemon on fresh temporary root and run directories.
    pub fn start() -> Daemon {
        let base = unique_dir("wharf-test");
        let (bridge, bip, pool) = unique_network();
        let mut d = Daemon {
            root: base.join("root"),
            run: base.join("run"),
            child: None,
            bridge,
            bip,
            pool,
            env: Vec::new(),
        };
        d.spawn();
        d
    }

    /// A daemon with busybox whose environment also holds `env`.
    pub fn with_busybox_env(env: &[(&str, &str)]) -> Daemon {
        let mut d = Daemon::with_busybox();
        d.stop();
        d.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        d.spawn();
        d
    }

    /// A daemon with the busybox image imported as `busybox:latest`.
    pub fn with_busybox() -> Daemon {
        let d = Daemon::start();
        let out = d.wharf(&[
            "import",
            "--change",
            "CMD [\"sh\"]",
            busybox_tar().to_str().unwrap(),
            "busybox:latest",
        ]);
        assert!(
            out.status.success(),
            "import busybox: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        d
    }

    pub fn sock(&self) -> PathBuf {
        self.run.join("wharf.sock")
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.sock().display())
    }

    pub fn spawn(&mut self) {
        std::fs::create_dir_all(&self.root).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.parent().unwrap().join("daemon.log"))
            .unwrap();
        let child = Command::new(WHARF)
            .args(["daemon", "--root"])
            .arg(&self.root)
            .arg("--run-root")
            .arg(&self.run)
            .args(["--bridge", &self.bridge, "--bip", &self.bip])
            .args(["--default-address-pool", &self.pool])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn wharf daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.sock().exists() || !self.wharf(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "daemon did not come up:\n{}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, as an operator stops it; with nothing running it removes its bridges and
    /// firewall rules.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }

    /// `kill -9` of the daemon, leaving its containers and shims running.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.root.parent().unwrap().join("daemon.log")).unwrap_or_default()
    }

    /// A `wharf` command pointed at this daemon.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(WHARF);
        c.args(args)
            .env("WHARF_HOST", self.host())
            .env("WHARF_ROOT", &self.root)
            .env("WHARF_RUN", &self.run)
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null());
        c
    }

    pub fn wharf(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run wharf")
    }

    /// A real docker CLI pointed at this daemon.
    pub fn docker_cmd(&self, docker: &str, args: &[&str]) -> Command {
        let mut c = Command::new(docker);
        c.args(args)
            .env("DOCKER_HOST", self.host())
            .env(
                "DOCKER_CONFIG",
                self.root.parent().unwrap().join("docker-config"),
            )
            .stdin(Stdio::null());
        c
    }

    pub fn docker(&self, docker: &str, args: &[&str]) -> Output {
        self.docker_cmd(docker, args).output().expect("run docker")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.wharf(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.wharf(&["rm", "-f", id]);
            }
            self.stop();
        }
        unmount_under(&self.root);
        let _ = std::fs::remove_dir_all(self.root.parent().unwrap());
    }
}

/// Unmounts everything mounted below `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let prefix = dir.to_string_lossy().to_string();
    let mut targets: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|t| t.starts_with(&prefix))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for t in targets {
        let _ = Command::new("umount").arg("-l").arg(t).status();
    }
}

/// A bridge name, its gateway/prefix and a user-network pool no other test daemon of this
/// run uses: 10.X.N.0/24 per daemon (X from the pid, N a counter), the lower half for the
/// default bridge, the upper half cut into /28s for user networks.
pub fn unique_network() -> (String, String, String) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 256;
    let pid = std::process::id();
    let x = 128 + pid % 64;
    (
        format!("wt{}-{n}", pid % 100_000),
        format!("10.{x}.{n}.1/25"),
        format!("base=10.{x}.{n}.128/25,size=28"),
    )
}

pub fn unique_dir(prefix: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Asserts success and returns trimmed stdout.
#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o).trim().to_string()
}
