//! The shim and the runtime, without a daemon: a busybox bundle on a temporary directory, its
//! config.json from `spec::build`, `wharf shim run` / `wharf shim exec`, and the shim contract
//! (report line, control socket, json-file log, exit record), checked against the kernel.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use wharf_api::models::HostConfig;
use wharf_engine::container::spec::{self, SpecInput};

use crate::harness::{WHARF, busybox_tar, unique_dir};

/// One container's bundle and files under a temporary directory.
struct Bundle {
    base: PathBuf,
    id: String,
    bundle: PathBuf,
    rootfs: PathBuf,
    state: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    pid: Option<i32>,
    warnings: Vec<String>,
}

fn unique_id() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("shimtest{}x{n}", std::process::id())
}

impl Bundle {
    fn new(args: &[&str], host: HostConfig, tty: bool) -> Bundle {
        Bundle::with(args, host, tty, "")
    }

    fn with(args: &[&str], host: HostConfig, tty: bool, user: &str) -> Bundle {
        let base = unique_dir("wharf-test-shim");
        let id = unique_id();
        let bundle = base.join("bundle");
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        let st = Command::new("tar")
            .arg("-xf")
            .arg(busybox_tar())
            .arg("-C")
            .arg(&rootfs)
            .status()
            .unwrap();
        assert!(st.success());
        let init = Path::new("/usr/bin/tini-static");
        let (oci, warnings) = spec::build(&SpecInput {
            id: &id,
            rootfs: &rootfs,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            cwd: "/".into(),
            user: user.into(),
            hostname: id[..12].to_string(),
            tty,
            open_stdin: true,
            host: &host,
            etc_files: &[],
            cgroup_parent: "wharf",
            init_binary: host.init.unwrap_or(false).then_some(init),
            netns: None,
        })
        .unwrap();
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec(&oci).unwrap(),
        )
        .unwrap();
        Bundle {
            state: base.join("state"),
            dir: base.join("run"),
            log: base.join("log.json"),
            base,
            id,
            bundle,
            rootfs,
            pid: None,
            warnings,
        }
    }

    fn run_cmd(&self, flags: &[&str]) -> Command {
        let mut c = Command::new(WHARF);
        c.args(["shim", "run", "--id", &self.id])
            .arg("--bundle")
            .arg(&self.bundle)
            .arg("--state")
            .arg(&self.state)
            .arg("--dir")
            .arg(&self.dir)
            .arg("--log")
            .arg(&self.log)
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        c
    }

    /// Runs the shim; returns its report line.
    fn create(&mut self, flags: &[&str]) -> Result<i32, String> {
        let mut child = self.run_cmd(flags).spawn().unwrap();
        // One line only: the container's process holds the pipe until it starts.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        child.wait().unwrap();
        let line = line.trim_end().to_string();
        if let Some(pid) = line.strip_prefix("ok ") {
            let pid: i32 = pid.trim().parse().unwrap();
            self.pid = Some(pid);
            assert_eq!(
                std::fs::read_to_string(self.dir.join("pid"))
                    .unwrap()
                    .trim(),
                pid.to_string()
            );
            Ok(pid)
        } else {
            assert!(line.starts_with("err "), "bad report line {line:?}");
            Err(line["err ".len()..].to_string())
        }
    }

    fn control(&self, command: &str) -> String {
        let mut s = UnixStream::connect(self.dir.join("shim.sock")).unwrap();
        s.write_all(command.as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        line
    }

    fn start(&self) {
        assert_eq!(self.control("start\n"), "ok\n");
    }

    fn attach(&self, stdin: bool, stdout: bool, stderr: bool) -> UnixStream {
        let mut s = UnixStream::connect(self.dir.join("shim.sock")).unwrap();
        let b = |v: bool| if v { 1 } else { 0 };
        s.write_all(format!("attach {} {} {}\n", b(stdin), b(stdout), b(stderr)).as_bytes())
            .unwrap();
        s
    }

    /// The exit record: through `wait` on the socket while the shim runs, else from the
    /// exit file (the shim writes it before it removes its socket).
    fn wait(&self) -> serde_json::Value {
        let file = || -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(self.dir.join("exit")).unwrap()).unwrap()
        };
        let Ok(mut s) = UnixStream::connect(self.dir.join("shim.sock")) else {
            return file();
        };
        let mut line = String::new();
        if s.write_all(b"wait\n").is_ok() {
            let _ = BufReader::new(s).read_line(&mut line);
        }
        if line.is_empty() {
            return file();
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert_eq!(v, file());
        v
    }

    fn log_entries(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn log_text(&self, stream: &str) -> String {
        self.log_entries()
            .iter()
            .filter(|e| e["stream"] == stream)
            .map(|e| e["log"].as_str().unwrap().to_string())
            .collect()
    }

    /// Runs to the end: create, start, wait. Returns (exit record, stdout, stderr) from the log.
    fn run_to_end(&mut self) -> (serde_json::Value, String, String) {
        self.create(&[])
            .unwrap_or_else(|e| panic!("create failed: {e}"));
        self.start();
        let exit = self.wait();
        (exit, self.log_text("stdout"), self.log_text("stderr"))
    }

    /// Nothing of the container remains: cgroup, libcontainer state, processes, socket.
    fn assert_gone(&self) {
        let cg = wharf_runtime::cgroup::Cgroup::system(format!("/wharf/{}", self.id));
        assert_eq!(
            cg.dirs(),
            Vec::<PathBuf>::new(),
            "cgroup directories remain"
        );
        assert!(
            !self.state.join(&self.id).exists(),
            "libcontainer state remains"
        );
        assert!(
            !self.dir.join("shim.sock").exists(),
            "control socket remains"
        );
        if let Some(pid) = self.pid {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists() || is_zombie_free(pid),
                "container process {pid} remains"
            );
        }
        // The shim exits right after it has answered; give it a bounded moment to do so.
        let mut left = shim_processes(&self.id);
        for _ in 0..500 {
            if left.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            left = shim_processes(&self.id);
        }
        assert!(left.is_empty(), "shim processes remain: {left:?}");
    }
}

/// A pid that was reused by an unrelated process is fine; our container's init is not.
fn is_zombie_free(pid: i32) -> bool {
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    !cmdline.contains("/wharf/shimtest")
}

/// Live `wharf shim` processes serving container `id`.
fn shim_processes(id: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.contains("shim\0run") && cmd.contains(id)
        })
        .collect()
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            // The shim finishes on its own once its container is gone.
            if self.dir.join("shim.sock").exists() {
                let _ = UnixStream::connect(self.dir.join("shim.sock")).map(|mut s| {
                    let _ = s.write_all(b"wait\n");
                    let mut v = String::new();
                    let _ = s.read_to_string(&mut v);
                });
            }
        }
        if std::env::var_os("WHARF_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }
}

/// Splits Docker's multiplexed stream into (stdout, stderr).
fn demux(mut data: &[u8]) -> (String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while data.len() >= 8 {
        let len = u32::from_be_bytes([data[4], data[5], data[6], data[7]]) as usize;
        assert_eq!(&data[1..4], &[0, 0, 0]);
        let chunk = &data[8..8 + len];
        match data[0] {
            1 => out.extend_from_slice(chunk),
            2 => err.extend_from_slice(chunk),
            b => panic!("bad stream byte {b}"),
        }
        data = &data[8 + len..];
    }
    assert!(data.is_empty(), "trailing bytes");
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn echo_reaches_the_log_and_every_attach() {
    let mut b = Bundle::new(
        &["sh", "-c", "echo hi; echo oops >&2"],
        HostConfig::default(),
        false,
    );
    b.create(&[]).unwrap();
    let mut a1 = b.attach(false, true, true);
    let mut a2 = b.attach(false, true, false);
    // The attaches are registered before the process may run.
    assert!(b.control("pid\n").trim().parse::<i32>().is_ok());
    b.start();
    let mut raw = Vec::new();
    a1.read_to_end(&mut raw).unwrap();
    assert_eq!(demux(&raw), ("hi\n".to_string(), "oops\n".to_string()));
    let mut raw = Vec::new();
    a2.read_to_end(&mut raw).unwrap();
    assert_eq!(demux(&raw), ("hi\n".to_string(), String::new()));
    let exit = b.wait();
    assert_eq!(exit["exit_code"], 0);
    assert_eq!(exit["oom_killed"], false);
    assert!(exit["finished_at"].as_str().unwrap().ends_with('Z'));
    let entries = b.log_entries();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let out = entries.iter().find(|e| e["stream"] == "stdout").unwrap();
    assert_eq!(out["log"], "hi\n");
    assert!(out["time"].as_str().unwrap().contains('T'));
    b.assert_gone();
}

#[test]
fn exit_codes_and_signals() {
    let mut b = Bundle::new(&["sh", "-c", "exit 3"], HostConfig::default(), false);
    assert_eq!(b.run_to_end().0["exit_code"], 3);
    b.assert_gone();
    // A signal death is reported as 128 + the signal, as Docker does.
    let mut b = Bundle::new(&["sleep", "1000"], HostConfig::default(), false);
    let pid = b.create(&[]).unwrap();
    b.start();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(b.wait()["exit_code"], 137);
    b.assert_gone();
}

#[test]
fn start_failures_keep_the_runtime_words() {
    let mut b = Bundle::new(&["surely-not-here"], HostConfig::default(), false);
    let err = b.create(&[]).unwrap_err();
    assert!(err.contains("executable file not found in $PATH"), "{err}");
    b.assert_gone();
    let mut b = Bundle::new(&["/etc/passwd"], HostConfig::default(), false);
    let err = b.create(&[]).unwrap_err();
    assert!(err.contains("permission denied"), "{err}");
    b.assert_gone();
}

#[test]
fn memory_limit_oom_kills() {
    let host = HostConfig {
        memory: Some(32 << 20),
        ..Default::default()
    };
    let mut b = Bundle::new(
        &[
            "sh",
            "-c",
            "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo ${#x}",
        ],
        host,
        false,
    );
    let (exit, out, _) = b.run_to_end();
    assert_eq!(exit["oom_killed"], true, "{exit} {out}");
    assert_ne!(exit["exit_code"], 0);
    b.assert_gone();
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let host = HostConfig {
        pids_limit: Some(10),
        ..Default::default()
    };
    let script = "i=0; while [ $i -lt 40 ]; do sleep 1000 & i=$((i+1)); done; echo started; cat /sys/fs/cgroup/pids/pids.max 2>/dev/null; kill $(jobs -p) 2>/dev/null; exit 0";
    let mut b = Bundle::new(&["sh", "-c", script], host, false);
    let (_, out, err) = b.run_to_end();
    assert!(
        err.contains("fork") || err.contains("Resource temporarily unavailable"),
        "stdout {out:?} stderr {err:?}"
    );
    b.assert_gone();
}

#[test]
fn default_confinement_is_dockers() {
    let script = "grep -E '^(Seccomp|CapEff):' /proc/self/status; echo h > /proc/sysrq-trigger && echo sysrq-writable; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags; ls /dev; exit 0";
    let mut b = Bundle::new(&["sh", "-c", script], HostConfig::default(), false);
    let (exit, out, _) = b.run_to_end();
    assert_eq!(exit["exit_code"], 0);
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(!out.contains("sysrq-writable"), "{out}");
    // --network none still has a working loopback, as Docker's.
    assert!(
        out.contains("\nunknown\n0x9\n") || out.contains("\nup\n"),
        "{out}"
    );
    assert!(out.contains("\nnull\n") && out.contains("\nshm\n"), "{out}");
    b.assert_gone();

    // Privileged: no seccomp, every capability the host has, /proc/sys not read-only (checked
    // in the mount table only: writing sysrq-trigger would act on the host).
    let host = HostConfig {
        privileged: Some(true),
        ..Default::default()
    };
    let script = "grep -E '^(Seccomp|CapEff):' /proc/self/status; grep -q ' /proc/sys proc ro' /proc/self/mounts || echo sysrq-writable; exit 0";
    let mut b = Bundle::new(&["sh", "-c", script], host, false);
    let (_, out, _) = b.run_to_end();
    assert!(out.contains("Seccomp:\t0"), "{out}");
    assert!(!out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("sysrq-writable"), "{out}");
    b.assert_gone();
}

#[test]
fn forks_and_threads_work_under_the_default_profile() {
    // fork (clone without namespace flags) is allowed; unshare is not.
    let mut b = Bundle::new(
        &[
            "sh",
            "-c",
            "echo $(echo sub); unshare -m true && echo unshared; exit 0",
        ],
        HostConfig::default(),
        false,
    );
    let (_, out, _) = b.run_to_end();
    assert!(out.contains("sub\n"), "{out}");
    assert!(!out.contains("unshared"), "{out}");
    b.assert_gone();
}

#[test]
fn ulimits_above_the_host_are_clamped() {
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let want = (hard + 10000) as i64;
    let host = HostConfig {
        ulimits: Some(vec![wharf_api::models::ResourcesUlimits {
            name: Some("nofile".into()),
            soft: Some(want),
            hard: Some(want),
        }]),
        ..Default::default()
    };
    let mut b = Bundle::new(&["sh", "-c", "ulimit -n; ulimit -Hn"], host, false);
    let can_raise = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap() & (1 << 24) != 0)
        .unwrap();
    let (exit, out, _) = b.run_to_end();
    assert_eq!(exit["exit_code"], 0);
    if can_raise {
        assert!(b.warnings.is_empty());
        assert_eq!(out, format!("{want}\n{want}\n"));
    } else {
        assert_eq!(b.warnings.len(), 1, "{:?}", b.warnings);
        assert_eq!(out, format!("{hard}\n{hard}\n"));
    }
    b.assert_gone();
}

#[test]
fn init_runs_as_pid_one() {
    if !Path::new("/usr/bin/tini-static").exists() {
        eprintln!("skipped: /usr/bin/tini-static is not installed (apt-get install tini)");
        return;
    }
    let host = HostConfig {
        init: Some(true),
        ..Default::default()
    };
    let mut b = Bundle::new(
        &[
            "sh",
            "-c",
            "cat /proc/1/cmdline | tr '\\0' ' '; echo; echo $$",
        ],
        host,
        false,
    );
    let (exit, out, _) = b.run_to_end();
    assert_eq!(exit["exit_code"], 0);
    assert!(out.starts_with("/sbin/docker-init -- sh -c"), "{out}");
    assert!(!out.ends_with("\n1\n"), "{out}");
    b.assert_gone();
}

#[test]
fn stdin_and_the_shim_outlive_the_parent() {
    let mut b = Bundle::new(
        &["sh", "-c", "read x; echo got $x"],
        HostConfig::default(),
        false,
    );
    // A parent process that starts the shim and is then killed with its whole group.
    let mut cmd = b.run_cmd(&["--stdin", "--stdin-once"]);
    let script = format!(
        "{} ; sleep 1000",
        std::iter::once(cmd.get_program().to_string_lossy().to_string())
            .chain(cmd.get_args().map(|a| format!("'{}'", a.to_string_lossy())))
            .collect::<Vec<_>>()
            .join(" ")
    );
    cmd = Command::new("setsid");
    let mut parent = cmd
        .args(["sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid: i32 = line
        .trim()
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    b.pid = Some(pid);
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(parent.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    parent.wait().unwrap();
    assert!(
        !shim_processes(&b.id).is_empty(),
        "the shim died with its parent"
    );
    let mut a = b.attach(true, true, true);
    b.start();
    a.write_all(b"yes\n").unwrap();
    a.shutdown(std::net::Shutdown::Write).unwrap();
    let mut raw = Vec::new();
    a.read_to_end(&mut raw).unwrap();
    assert_eq!(demux(&raw).0, "got yes\n");
    assert_eq!(b.wait()["exit_code"], 0);
    b.assert_gone();
}

#[test]
fn tty_output_is_raw_and_resizable() {
    let mut b = Bundle::new(
        &["sh", "-c", "stty size; echo $TERM"],
        HostConfig::default(),
        true,
    );
    b.create(&["--tty"]).unwrap();
    assert_eq!(b.control("resize 33 99\n"), "ok\n");
    let mut a = b.attach(false, true, true);
    b.start();
    let mut raw = Vec::new();
    a.read_to_end(&mut raw).unwrap();
    assert_eq!(String::from_utf8_lossy(&raw), "33 99\r\nxterm\r\n");
    assert_eq!(b.wait()["exit_code"], 0);
    assert_eq!(b.log_text("stdout"), "33 99\r\nxterm\r\n");
    b.assert_gone();
}

/// Writes an exec's process file from the container's spec.
fn exec_process(b: &Bundle, args: &[&str], tty: bool) -> PathBuf {
    let base: oci_spec::runtime::Spec =
        serde_json::from_slice(&std::fs::read(b.bundle.join("config.json")).unwrap()).unwrap();
    let p = spec::exec_process(&spec::ExecInput {
        base: &base,
        rootfs: &b.rootfs,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec!["FROM_EXEC=1".into()],
        cwd: String::new(),
        user: String::new(),
        tty,
        privileged: false,
    })
    .unwrap();
    let path = b
        .base
        .join(format!("process-{}.json", args.join("-").len()));
    std::fs::write(&path, serde_json::to_vec(&p).unwrap()).unwrap();
    path
}

#[test]
fn exec_runs_in_the_container() {
    let mut b = Bundle::new(&["sleep", "1000"], HostConfig::default(), false);
    let pid = b.create(&[]).unwrap();
    b.start();
    let process = exec_process(
        &b,
        &["sh", "-c", "echo $FROM_EXEC; hostname; exit 5"],
        false,
    );
    let out = Command::new(WHARF)
        .args(["shim", "exec", "--id", &b.id])
        .arg("--state")
        .arg(&b.state)
        .arg("--process")
        .arg(&process)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("1\n{}\n", &b.id[..12])
    );

    let process = exec_process(&b, &["nope-not-here"], false);
    let out = Command::new(WHARF)
        .args(["shim", "exec", "--id", &b.id])
        .arg("--state")
        .arg(&b.state)
        .arg("--process")
        .arg(&process)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("executable file not found"),
        "{out:?}"
    );

    // A tty exec hands its pty master back over the report socket.
    let process = exec_process(&b, &["sh", "-c", "stty size"], true);
    let report = b.base.join("report.sock");
    let listener = std::os::unix::net::UnixListener::bind(&report).unwrap();
    let mut child = Command::new(WHARF)
        .args(["shim", "exec", "--tty", "--id", &b.id])
        .arg("--state")
        .arg(&b.state)
        .arg("--process")
        .arg(&process)
        .arg("--report")
        .arg(&report)
        .spawn()
        .unwrap();
    let (conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 64];
    let (n, master) =
        wharf_runtime::recv_with_fd(std::os::fd::AsFd::as_fd(&conn), &mut buf).unwrap();
    assert!(std::str::from_utf8(&buf[..n]).unwrap().starts_with("ok "));
    let mut master = std::fs::File::from(master.expect("a pty master"));
    let mut text = Vec::new();
    let mut chunk = [0u8; 256];
    // The pty reports EIO once the process has closed it.
    while let Ok(n) = master.read(&mut chunk) {
        if n == 0 {
            break;
        }
        text.extend_from_slice(&chunk[..n]);
    }
    assert!(child.wait().unwrap().success());
    assert!(String::from_utf8_lossy(&text).contains(' '), "{text:?}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(b.wait()["exit_code"], 137);
    b.assert_gone();
}

/// The engine's async client against real shims: spawn, attach before release, wait, exec
/// with pipes and with a pty, start failures, and a deep directory (long socket paths).
#[test]
fn engine_client_drives_the_shim() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use wharf_engine::container::shim::{
        self, AttachStreams, ExecIo, ExecSpawn, ShimError, ShimSpawn,
    };

    shim::use_binary(PathBuf::from(WHARF));
    let mut b = Bundle::new(
        &["sh", "-c", "read x; echo got $x; sleep 1000"],
        HostConfig::default(),
        false,
    );
    // A run directory as deep as a daemon's under a temporary root: over sun_path's 108 bytes.
    let deep = b.base.join("run").join("containers").join("c".repeat(64));
    b.dir = deep;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pid = shim::spawn(&ShimSpawn {
            id: &b.id,
            bundle: &b.bundle,
            state_root: &b.state,
            dir: &b.dir,
            log: &b.log,
            tty: false,
            stdin: true,
            stdin_once: true,
        })
        .await
        .unwrap();
        b.pid = Some(pid as i32);
        assert!(b.dir.join("shim.sock").as_os_str().len() > 108);
        assert!(shim::is_alive(&b.dir).await);
        let mut a = shim::attach(
            &b.dir,
            AttachStreams {
                stdin: true,
                stdout: true,
                stderr: true,
            },
        )
        .await
        .unwrap();
        shim::release(&b.dir).await.unwrap();
        a.write_all(b"there\n").await.unwrap();
        let mut head = [0u8; 8 + 10];
        a.read_exact(&mut head).await.unwrap();
        assert_eq!(demux(&head).0, "got there\n");

        // exec with pipes.
        let base: oci_spec::runtime::Spec =
            serde_json::from_slice(&std::fs::read(b.bundle.join("config.json")).unwrap()).unwrap();
        let process = |args: &[&str], tty: bool| {
            spec::exec_process(&spec::ExecInput {
                base: &base,
                rootfs: &b.rootfs,
                args: args.iter().map(|s| s.to_string()).collect(),
                env: vec![],
                cwd: "/tmp".into(),
                user: String::new(),
                tty,
                privileged: false,
            })
            .unwrap()
        };
        let p = process(&["sh", "-c", "pwd; cat; exit 4"], false);
        let spawn = |p, tty, id| ExecSpawn {
            id: &b.id,
            state_root: &b.state,
            dir: &b.dir,
            exec_id: id,
            process: p,
            tty,
            stdin: true,
        };
        let mut h = shim::exec(&spawn(&p, false, "e1")).await.unwrap();
        assert!(h.pid > 0);
        let ExecIo::Pipes {
            stdin, mut stdout, ..
        } = h.io
        else {
            panic!("pipes expected")
        };
        let mut stdin = stdin.unwrap();
        stdin.write_all(b"piped\n").await.unwrap();
        drop(stdin);
        let mut out = String::new();
        stdout.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "/tmp\npiped\n");
        assert_eq!((&mut h.exit).await.unwrap(), 4);

        // exec with a pty: resize, then read until the process ends.
        let p = process(&["sh", "-c", "read x; stty size; echo $x"], true);
        let h = shim::exec(&spawn(&p, true, "e2")).await.unwrap();
        let ExecIo::Pty(mut master) = h.io else {
            panic!("pty expected")
        };
        master.resize(12, 34).unwrap();
        master.write_all(b"typed\n").await.unwrap();
        let mut out = Vec::new();
        master.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("12 34\r\ntyped\r\n"), "{text:?}");
        assert_eq!(h.exit.await.unwrap(), 0);

        // Start failures keep the runtime's words.
        let p = process(&["no-such-binary"], false);
        match shim::exec(&spawn(&p, false, "e3")).await {
            Err(ShimError::Start(m)) => {
                assert!(m.contains("executable file not found in $PATH"), "{m}")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("exec of a missing binary started"),
        }
        assert!(!b.dir.join("exec-e3.json").exists() && !b.dir.join("exec-e3.sock").exists());

        shim::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        let exit = shim::wait(&b.dir).await.unwrap();
        assert_eq!((exit.exit_code, exit.oom_killed), (137, false));
        assert_eq!(shim::read_exit(&b.dir), Some(exit));
        assert!(!shim::is_alive(&b.dir).await);
    });
    b.assert_gone();
}

/// Resources land in the container's cgroup and read back as `docker stats` needs them;
/// the freezer pauses and resumes it.
#[test]
fn cgroup_limits_stats_and_freezer() {
    use wharf_runtime::cgroup::{Cgroup, Layout, layout};
    let host = HostConfig {
        memory: Some(32 << 20),
        pids_limit: Some(10),
        nano_cpus: Some(500_000_000),
        ..Default::default()
    };
    let mut b = Bundle::new(&["sleep", "1000"], host, false);
    let pid = b.create(&[]).unwrap();
    b.start();
    let cg = Cgroup::system(format!("/wharf/{}", b.id));
    let stats = cg.stats().unwrap();
    assert_eq!(stats.memory.memory.limit, 32 << 20);
    assert_eq!(stats.pids.limit, 10);
    assert!(stats.pids.current >= 1);
    assert!(stats.cpu.usage.usage_total > 0);
    assert_eq!(cg.oom_kills().unwrap(), 0);
    let root = Path::new(wharf_runtime::cgroup::DEFAULT_ROOT);
    let (quota, frozen) = match layout(root).unwrap() {
        Layout::Unified => {
            let dir = root.join("wharf").join(&b.id);
            (
                std::fs::read_to_string(dir.join("cpu.max")).unwrap(),
                dir.join("cgroup.freeze"),
            )
        }
        _ => (
            std::fs::read_to_string(root.join("cpu/wharf").join(&b.id).join("cpu.cfs_quota_us"))
                .unwrap(),
            root.join("freezer/wharf").join(&b.id).join("freezer.state"),
        ),
    };
    assert!(quota.starts_with("50000"), "{quota}");
    cg.freeze(true).unwrap();
    let state = std::fs::read_to_string(&frozen).unwrap();
    assert!(state.trim() == "FROZEN" || state.trim() == "1", "{state}");
    cg.freeze(false).unwrap();
    let state = std::fs::read_to_string(&frozen).unwrap();
    assert!(state.trim() == "THAWED" || state.trim() == "0", "{state}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(b.wait()["exit_code"], 137);
    b.assert_gone();
}
