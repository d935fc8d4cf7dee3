//! The `wharf` CLI against Debian's dockerd (a reference Engine API) on a temporary root,
//! with docker CLI 28's output as the expected bytes where that CLI is installed. Skipped,
//! with a note, when not root, when dockerd is missing, or when the `wharf` binary has not
//! been built (`cargo test --workspace` builds it). Everything started here is stopped,
//! unmounted and removed at the end, also when a check fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DOCKERD: &str = "/usr/sbin/dockerd";
const DOCKER28: &str = "/usr/local/bin/docker";

fn wharf_bin() -> Option<PathBuf> {
    // target/debug/deps/dockerd-<hash> -> target/debug/wharf
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("wharf");
    bin.exists().then_some(bin)
}

struct Dockerd {
    dir: PathBuf,
    child: Option<Child>,
    wharf: PathBuf,
}

impl Dockerd {
    fn start() -> Option<Dockerd> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return None;
        }
        if !Path::new(DOCKERD).exists() {
            eprintln!("skipped: {DOCKERD} is missing");
            return None;
        }
        let Some(wharf) = wharf_bin() else {
            eprintln!("skipped: the wharf binary is not built (run cargo test --workspace)");
            return None;
        };
        let dir = std::env::temp_dir().join(format!("wharf-cli-dockerd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).ok()?;
        let log = std::fs::File::create(dir.join("dockerd.log")).ok()?;
        let child = Command::new(DOCKERD)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("d.sock").display()))
            .arg("--pidfile")
            .arg(dir.join("pid"))
            .args(["--bridge", "none", "--iptables=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().ok()?)
            .stderr(log)
            .spawn()
            .ok()?;
        let d = Dockerd {
            dir,
            child: Some(child),
            wharf,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if d.wharf(&["version"]).status.success() {
                return Some(d);
            }
            if Instant::now() > deadline {
                eprintln!(
                    "skipped: dockerd did not come up:\n{}",
                    std::fs::read_to_string(d.dir.join("dockerd.log")).unwrap_or_default()
                );
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.join("d.sock").display())
    }

    fn wharf_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.wharf);
        c.args(args)
            .env("WHARF_HOST", self.host())
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null());
        c
    }

    fn wharf(&self, args: &[&str]) -> Output {
        self.wharf_cmd(args).output().expect("run wharf")
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER28)
            .args(args)
            .env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.dir.join("docker-config"))
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// Runs both CLIs; stdout and exit code must match byte for byte. Without docker 28
    /// only wharf runs.
    #[track_caller]
    fn same(&self, args: &[&str]) -> String {
        let w = self.wharf(args);
        if !Path::new(DOCKER28).exists() {
            return String::from_utf8_lossy(&w.stdout).into_owned();
        }
        let d = self.docker(args);
        assert_eq!(
            String::from_utf8_lossy(&w.stdout),
            String::from_utf8_lossy(&d.stdout),
            "stdout of {args:?} (wharf stderr: {})",
            String::from_utf8_lossy(&w.stderr)
        );
        assert_eq!(w.status.code(), d.status.code(), "exit code of {args:?}");
        String::from_utf8_lossy(&w.stdout).into_owned()
    }

    /// Like [`Dockerd::same`] for `--format json` output, without the fields that say how
    /// long ago something happened: the two CLIs run one after the other and may fall on
    /// either side of a second.
    fn same_json(&self, args: &[&str], relative: &[&str]) {
        let w = self.wharf(args);
        if !Path::new(DOCKER28).exists() {
            return;
        }
        let d = self.docker(args);
        let strip = |out: &[u8]| -> Vec<serde_json::Value> {
            String::from_utf8_lossy(out)
                .lines()
                .map(|l| {
                    let mut v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                    if let Some(o) = v.as_object_mut() {
                        for k in relative {
                            o.remove(*k);
                        }
                    }
                    v
                })
                .collect()
        };
        assert_eq!(
            strip(&w.stdout),
            strip(&d.stdout),
            "stdout of {args:?} (wharf stderr: {})",
            String::from_utf8_lossy(&w.stderr)
        );
        assert_eq!(w.status.code(), d.status.code(), "exit code of {args:?}");
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let ids = self.wharf(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.wharf(&["rm", "-f", id]);
            }
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let prefix = self.dir.to_string_lossy().to_string();
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
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn cli_against_dockerd() {
    let Some(d) = Dockerd::start() else { return };
    let tar = d.dir.join("busybox.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/mkbusybox.sh");
    assert!(
        Command::new(script)
            .arg(&tar)
            .status()
            .expect("mkbusybox")
            .success()
    );
    let imported = d.wharf(&[
        "import",
        "--change",
        "CMD [\"sh\"]",
        tar.to_str().expect("path"),
        "busybox:latest",
    ]);
    assert!(
        imported.status.success(),
        "import: {}",
        String::from_utf8_lossy(&imported.stderr)
    );
    assert!(text(&imported).starts_with("sha256:"));

    images(&d);
    run_basics(&d);
    containers(&d);
    signals_and_tty(&d);
    save_load(&d);
}

fn images(d: &Dockerd) {
    d.same(&[
        "images",
        "--format",
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.Size}}",
    ]);
    d.same(&["images", "-q"]);
    d.same(&[
        "images",
        "--digests",
        "--format",
        "{{.Repository}} {{.Digest}}",
    ]);
    d.same_json(&["images", "--format", "json"], &["CreatedSince"]);
    assert!(d.wharf(&["tag", "busybox", "bb:v1"]).status.success());
    // docker lists an image's tags in Go map order (random): compare as sets of lines.
    let sorted = |o: Output| {
        let mut l: Vec<String> = text(&o).lines().map(str::to_string).collect();
        l.sort();
        l
    };
    let args = [
        "images",
        "--format",
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}",
    ];
    let listed = sorted(d.wharf(&args));
    assert_eq!(listed.len(), 3, "{listed:?}");
    if Path::new(DOCKER28).exists() {
        assert_eq!(listed, sorted(d.docker(&args)));
    }
    d.same(&[
        "images",
        "-f",
        "reference=bb",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]);
    d.same(&["image", "inspect", "busybox"]);
    d.same(&[
        "inspect",
        "-f",
        "{{.Config.Cmd}} {{json .RepoTags}} {{.Os}}",
        "busybox",
    ]);
    d.same(&[
        "history",
        "--format",
        "{{.ID}} {{.Size}} {{.Comment}}",
        "busybox",
    ]);
    let rmi = d.wharf(&["rmi", "bb:v1"]);
    assert_eq!(text(&rmi), "Untagged: bb:v1\n");
    d.same(&["rmi", "nosuch"]);
}

fn run_basics(d: &Dockerd) {
    let o = d.wharf(&["run", "--rm", "--network", "none", "busybox", "echo", "hi"]);
    assert_eq!((text(&o).as_str(), o.status.code()), ("hi\n", Some(0)));
    let o = d.wharf(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3));
    let o = d.wharf(&["run", "--rm", "--network", "none", "busybox", "nosuch"]);
    assert_eq!(
        o.status.code(),
        Some(127),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = d.wharf(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--pull",
        "never",
        "nosuchimage",
    ]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("No such image"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Output streams stay apart.
    let o = d.wharf(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert_eq!(text(&o), "out\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    // stdin reaches the container and its EOF ends it.
    let mut child = d
        .wharf_cmd(&[
            "run",
            "-i",
            "--rm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "cat; exit 4",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"a\nb\n")
        .expect("write");
    let o = child.wait_with_output().expect("wait");
    assert_eq!((text(&o).as_str(), o.status.code()), ("a\nb\n", Some(4)));
    // Bad flags change nothing.
    let o = d.wharf(&[
        "run",
        "--rm",
        "--restart",
        "always",
        "--network",
        "none",
        "busybox",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125));
    let o = d.wharf(&[
        "run",
        "--memory",
        "lots",
        "--network",
        "none",
        "busybox",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(text(&d.wharf(&["ps", "-aq"])), "");
    // Flags reach the container.
    let o = d.wharf(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-e",
        "FOO=bar",
        "-w",
        "/tmp",
        "-h",
        "box",
        "--read-only",
        "--tmpfs",
        "/run",
        "busybox",
        "sh",
        "-c",
        "echo $FOO $(pwd) $(hostname); touch /x 2>/dev/null || echo ro",
    ]);
    assert_eq!(text(&o), "bar /tmp box\nro\n");
}

fn containers(d: &Dockerd) {
    let o = d.wharf(&[
        "run",
        "-d",
        "--name",
        "sleeper",
        "-l",
        "a=b",
        "--network",
        "none",
        "busybox",
        "sleep",
        "1000",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id = text(&o).trim().to_string();
    assert_eq!(id.len(), 64);
    let o = d.wharf(&[
        "create",
        "--name",
        "made",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo made; exit 2",
    ]);
    assert!(o.status.success());
    let o = d.wharf(&["start", "-a", "made"]);
    assert_eq!((text(&o).as_str(), o.status.code()), ("made\n", Some(2)));
    let ps = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.Names}}\t{{.State}}\t{{.Labels}}\t{{.Label \"a\"}}";
    d.same(&["ps", "-a", "--format", ps]);
    d.same(&["ps", "--no-trunc", "--format", ps]);
    d.same(&["ps", "-a", "-q"]);
    d.same(&["ps", "-a", "-f", "status=exited", "--format", "{{.Names}}"]);
    d.same(&["ps", "-a", "-f", "label=a=b", "--format", "{{.Names}}"]);
    d.same_json(&["ps", "-a", "--format", "json"], &["RunningFor", "Status"]);
    d.same(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.Config.Entrypoint}} {{.HostConfig.Binds}} {{.Config.Labels}}",
        "sleeper",
    ]);
    d.same(&["inspect", "sleeper", "nosuch"]);
    d.same(&["top", "sleeper", "-o", "pid,args"]);
    d.same(&["wait", "made"]);
    // exec: output, exit codes, env and workdir.
    let o = d.wharf(&[
        "exec",
        "-e",
        "X=1",
        "-w",
        "/etc",
        "sleeper",
        "sh",
        "-c",
        "echo $X $(pwd); exit 6",
    ]);
    assert_eq!((text(&o).as_str(), o.status.code()), ("1 /etc\n", Some(6)));
    d.same(&["exec", "sleeper", "nosuchcmd"]);
    d.same(&["exec", "made", "true"]);
    let o = d.wharf(&["exec", "-d", "sleeper", "touch", "/tmp/flag"]);
    assert!(o.status.success());
    // logs, demultiplexed.
    d.wharf(&[
        "run",
        "-d",
        "--name",
        "talker",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo one; echo two >&2",
    ]);
    d.wharf(&["wait", "talker"]);
    let o = d.wharf(&["logs", "talker"]);
    assert_eq!(
        (
            text(&o).as_str(),
            String::from_utf8_lossy(&o.stderr).into_owned().as_str()
        ),
        ("one\n", "two\n")
    );
    d.same(&["logs", "--tail", "1", "talker"]);
    // Lifecycle verbs and their errors.
    assert_eq!(text(&d.wharf(&["pause", "sleeper"])), "sleeper\n");
    d.same(&["ps", "--format", "{{.Names}} {{.State}}"]);
    assert_eq!(text(&d.wharf(&["unpause", "sleeper"])), "sleeper\n");
    assert!(d.wharf(&["rename", "talker", "chatter"]).status.success());
    d.same(&["ps", "-a", "--format", "{{.Names}}"]);
    d.same(&["stop", "nosuch"]);
    d.same(&["kill", "made"]);
    d.same(&["rm", "nosuch"]);
    let o = d.wharf(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.PIDs}}",
        "sleeper",
    ]);
    assert_eq!(text(&o), "sleeper 1\n");
    assert_eq!(
        text(&d.wharf(&["kill", "-s", "KILL", "sleeper"])),
        "sleeper\n"
    );
    assert_eq!(
        text(&d.wharf(&["rm", "-f", "sleeper", "made", "chatter"])),
        "sleeper\nmade\nchatter\n"
    );
    assert_eq!(text(&d.wharf(&["ps", "-aq"])), "");
    assert!(!id.is_empty());
}

fn signals_and_tty(d: &Dockerd) {
    // Without a tty, a signal to the CLI goes to the container.
    let mut child = d
        .wharf_cmd(&[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "trap 'echo got TERM; exit 7' TERM; echo ready; while true; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    assert_eq!(line, "ready\n");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("read");
    assert_eq!(rest, "got TERM\n");
    assert_eq!(child.wait().expect("wait").code(), Some(7));

    // With -it on a terminal: the container gets a terminal, raw mode is restored after.
    let size = nix::pty::Winsize {
        ws_row: 33,
        ws_col: 111,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
    let before = nix::sys::termios::tcgetattr(&pty.slave).expect("tcgetattr");
    let err_log = d.dir.join("tty.err");
    let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup"));
    let mut child = d
        .wharf_cmd(&[
            "run",
            "-it",
            "--rm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "[ -t 0 ] && echo is a tty; exit 5",
        ])
        .stdin(slave(&pty.slave))
        .stdout(slave(&pty.slave))
        .stderr(Stdio::from(std::fs::File::create(&err_log).expect("log")))
        .spawn()
        .expect("spawn");
    // Drain the terminal while the CLI runs; the read ends with EIO once the slave closes.
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    });
    let status = child.wait().expect("wait");
    let after = nix::sys::termios::tcgetattr(&pty.slave).expect("tcgetattr");
    drop(pty.slave);
    let shown = String::from_utf8_lossy(&reader.join().expect("reader")).into_owned();
    assert_eq!(
        status.code(),
        Some(5),
        "{shown:?} {}",
        std::fs::read_to_string(&err_log).unwrap_or_default()
    );
    assert_eq!(shown, "is a tty\r\n");
    assert_eq!(before.local_flags, after.local_flags);
    assert_eq!(before.input_flags, after.input_flags);
}

fn save_load(d: &Dockerd) {
    let archive = d.dir.join("saved.tar");
    let o = d.wharf(&["save", "-o", archive.to_str().expect("path"), "busybox"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0) > 1_000_000);
    assert_eq!(
        text(&d.wharf(&["rmi", "busybox"])).lines().next(),
        Some("Untagged: busybox:latest")
    );
    let o = d.wharf(&["load", "-i", archive.to_str().expect("path")]);
    assert_eq!(
        text(&o),
        "Loaded image: busybox:latest\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = d.wharf(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "echo",
        "back",
    ]);
    assert_eq!(text(&o), "back\n");
    // A missing input file is refused before anything is sent.
    let o = d.wharf(&["load", "-i", "/nonexistent.tar"]);
    assert_eq!(o.status.code(), Some(1));
}
