//! `wharf run` and the everyday container verbs through the wharf CLI.

use std::time::Duration;

use crate::harness::{Daemon, ok, stderr, stdout};

#[test]
fn run_echo_prints_and_exits_zero() {
    let d = Daemon::with_busybox();
    let out = d.wharf(&["run", "--rm", "busybox", "echo", "hi"]);
    assert_eq!(stdout(&out), "hi\n", "stderr: {}", stderr(&out));
    assert_eq!(out.status.code(), Some(0));
    // --rm left nothing behind.
    assert_eq!(ok(d.wharf(&["ps", "-aq"])), "");
}

#[test]
fn exit_codes_follow_docker() {
    let d = Daemon::with_busybox();
    let out = d.wharf(&["run", "--rm", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = d.wharf(&["run", "--rm", "busybox", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    let out = d.wharf(&["run", "--rm", "busybox", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    let out = d.wharf(&["run", "--rm", "no-such-image:1"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("no-such-image"), "{}", stderr(&out));
}

#[test]
fn detached_lifecycle() {
    let d = Daemon::with_busybox();
    let id = ok(d.wharf(&["run", "-d", "--name", "sleeper", "busybox", "sleep", "1000"]));
    assert_eq!(id.len(), 64);
    let status = ok(d.wharf(&["inspect", "--format", "{{.State.Status}}", "sleeper"]));
    assert_eq!(status, "running");
    let ps = ok(d.wharf(&["ps"]));
    assert!(ps.contains("sleeper") && ps.contains("Up "), "{ps}");
    ok(d.wharf(&["pause", "sleeper"]));
    assert_eq!(
        ok(d.wharf(&["inspect", "-f", "{{.State.Status}}", "sleeper"])),
        "paused"
    );
    ok(d.wharf(&["unpause", "sleeper"]));
    let top = ok(d.wharf(&["top", "sleeper"]));
    assert!(top.contains("sleep 1000"), "{top}");
    ok(d.wharf(&["rename", "sleeper", "napper"]));
    ok(d.wharf(&["stop", "-t", "1", "napper"]));
    let state = ok(d.wharf(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}}",
        "napper",
    ]));
    // `sleep` as pid 1 ignores SIGTERM, so stop ends with SIGKILL after the grace period.
    assert_eq!(state, "exited 137");
    ok(d.wharf(&["start", "napper"]));
    ok(d.wharf(&["kill", "-s", "KILL", "napper"]));
    assert_eq!(ok(d.wharf(&["wait", "napper"])), "137");
    ok(d.wharf(&["rm", "napper"]));
    let out = d.wharf(&["inspect", "napper"]);
    assert!(!out.status.success());
}

#[test]
fn logs_and_follow() {
    let d = Daemon::with_busybox();
    ok(d.wharf(&[
        "run",
        "-d",
        "--name",
        "talker",
        "busybox",
        "sh",
        "-c",
        "echo one; echo two >&2; sleep 1; echo three",
    ]));
    let out = d.wharf(&["logs", "-f", "talker"]);
    assert_eq!(stdout(&out), "one\nthree\n");
    assert_eq!(stderr(&out), "two\n");
    let tail = d.wharf(&["logs", "--tail", "1", "talker"]);
    assert_eq!(stdout(&tail), "three\n");
    let ts = ok(d.wharf(&["logs", "-t", "talker"]));
    assert!(ts.starts_with("20") && ts.contains("Z one"), "{ts}");
}

#[test]
fn exec_runs_in_the_container() {
    let d = Daemon::with_busybox();
    ok(d.wharf(&[
        "run", "-d", "--name", "box", "-e", "FOO=bar", "busybox", "sleep", "1000",
    ]));
    assert_eq!(
        ok(d.wharf(&["exec", "box", "sh", "-c", "echo $FOO"])),
        "bar"
    );
    assert_eq!(
        ok(d.wharf(&[
            "exec",
            "-e",
            "X=1",
            "-w",
            "/tmp",
            "box",
            "sh",
            "-c",
            "echo $X $(pwd)"
        ])),
        "1 /tmp"
    );
    let out = d.wharf(&["exec", "box", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    let out = d.wharf(&["exec", "box", "nope"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    let out = d
        .cmd(&["exec", "-i", "box", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = {
        use std::io::Write;
        let mut child = out;
        child.stdin.take().unwrap().write_all(b"piped\n").unwrap();
        child.wait_with_output().unwrap()
    };
    assert_eq!(stdout(&out), "piped\n");
}

#[test]
fn stdin_reaches_the_container() {
    let d = Daemon::with_busybox();
    let mut child = d
        .cmd(&["run", "--rm", "-i", "busybox", "sh", "-c", "tr a-z A-Z"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "SHOUT\n");
}

#[test]
fn create_options_reach_the_process() {
    let d = Daemon::with_busybox();
    let out = ok(d.wharf(&[
        "run",
        "--rm",
        "-e",
        "A=1",
        "-w",
        "/tmp",
        "-u",
        "1:1",
        "--hostname",
        "boaty",
        "busybox",
        "sh",
        "-c",
        "echo $A $(pwd) $(id -u):$(id -g) $(hostname)",
    ]));
    assert_eq!(out, "1 /tmp 1:1 boaty");
    let out = ok(d.wharf(&[
        "run",
        "--rm",
        "--entrypoint",
        "echo",
        "busybox",
        "from",
        "entrypoint",
    ]));
    assert_eq!(out, "from entrypoint");
    let out = d.wharf(&["run", "--rm", "--read-only", "busybox", "touch", "/x"]);
    assert_ne!(out.status.code(), Some(0));
    let out = ok(d.wharf(&[
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/scratch",
        "busybox",
        "sh",
        "-c",
        "touch /scratch/x && echo ok",
    ]));
    assert_eq!(out, "ok");
    let host_dir = crate::harness::unique_dir("wharf-test-bind");
    std::fs::write(host_dir.join("f"), "from host").unwrap();
    let bind = format!("{}:/mnt:ro", host_dir.display());
    assert_eq!(
        ok(d.wharf(&["run", "--rm", "-v", &bind, "busybox", "cat", "/mnt/f"])),
        "from host"
    );
    let out = d.wharf(&["run", "--rm", "-v", &bind, "busybox", "touch", "/mnt/g"]);
    assert_ne!(out.status.code(), Some(0));
    std::fs::remove_dir_all(&host_dir).unwrap();
    let labels = ok(d.wharf(&["create", "--label", "team=wharf", "busybox", "true"]));
    let listed = ok(d.wharf(&["ps", "-aq", "--no-trunc", "--filter", "label=team=wharf"]));
    assert_eq!(listed, labels);
}

#[test]
fn name_conflicts_and_prune() {
    let d = Daemon::with_busybox();
    ok(d.wharf(&["create", "--name", "dup", "busybox", "true"]));
    let out = d.wharf(&["create", "--name", "dup", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("already in use"), "{}", stderr(&out));
    ok(d.wharf(&["run", "--name", "done", "busybox", "true"]));
    let exited = ok(d.wharf(&[
        "ps",
        "-a",
        "--filter",
        "status=exited",
        "--format",
        "{{.Names}}",
    ]));
    assert_eq!(exited, "done");
    ok(d.wharf(&["container", "prune", "-f"]));
    assert_eq!(ok(d.wharf(&["ps", "-aq"])), "");
}

#[test]
fn restart_policy_restarts_with_backoff() {
    let d = Daemon::with_busybox();
    ok(d.wharf(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "exit 1",
    ]));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = ok(d.wharf(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.RestartCount}}",
            "flaky",
        ]));
        if s == "exited 2" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "last state: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    ok(d.wharf(&[
        "run",
        "-d",
        "--name",
        "always",
        "--restart",
        "always",
        "busybox",
        "sleep",
        "1000",
    ]));
    ok(d.wharf(&["stop", "-t", "0", "always"]));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        ok(d.wharf(&["inspect", "-f", "{{.State.Status}}", "always"])),
        "exited"
    );
}
