//! Containers outlive the daemon: `kill -9` of it, a restart, and everything still works.

use std::time::Duration;

use crate::harness::{Daemon, ok, stdout};

#[test]
fn container_survives_daemon_kill() {
    let mut d = Daemon::with_busybox();
    ok(d.wharf(&[
        "run",
        "-d",
        "--name",
        "survivor",
        "busybox",
        "sh",
        "-c",
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
    ]));
    let pid = ok(d.wharf(&["inspect", "-f", "{{.State.Pid}}", "survivor"]));
    d.kill9();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "container died with the daemon"
    );
    d.spawn();
    let ps = ok(d.wharf(&["ps", "--format", "{{.Names}} {{.Status}}"]));
    assert!(ps.starts_with("survivor Up"), "{ps}");
    let before = stdout(&d.wharf(&["logs", "survivor"])).lines().count();
    std::thread::sleep(Duration::from_millis(600));
    let after = stdout(&d.wharf(&["logs", "survivor"])).lines().count();
    assert!(after > before, "logs stopped: {before} -> {after}");
    // attach sees new output, then the container is stopped with a known code.
    let attach = d
        .cmd(&["attach", "--no-stdin", "survivor"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // pid 1 ignores signals it has no handler for, so only SIGKILL ends the shell.
    ok(d.wharf(&["kill", "survivor"]));
    let out = attach.wait_with_output().unwrap();
    assert!(stdout(&out).contains("tick"), "attach saw nothing");
    assert_eq!(
        ok(d.wharf(&["inspect", "-f", "{{.State.ExitCode}}", "survivor"])),
        "137"
    );
    ok(d.wharf(&["rm", "survivor"]));
}

#[test]
fn exit_while_daemon_is_down_is_recorded() {
    let mut d = Daemon::with_busybox();
    ok(d.wharf(&[
        "run",
        "-d",
        "--name",
        "shortlived",
        "busybox",
        "sh",
        "-c",
        "sleep 0.5; exit 4",
    ]));
    d.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    d.spawn();
    assert_eq!(
        ok(d.wharf(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            "shortlived"
        ])),
        "exited 4"
    );
    ok(d.wharf(&["rm", "shortlived"]));
}
