//! The real docker CLIs (28 and Debian's 20.10) against the wharf daemon.

use std::path::Path;

use crate::harness::{DOCKER20, DOCKER28, Daemon, ok, stderr, stdout};

fn check_cli(docker: &str) {
    if !Path::new(docker).exists() {
        eprintln!("skipping: {docker} is not installed");
        return;
    }
    let d = Daemon::with_busybox();
    let run = |args: &[&str]| d.docker(docker, args);

    let out = run(&["run", "--rm", "busybox", "echo", "hi"]);
    assert_eq!(stdout(&out), "hi\n", "{docker}: {}", stderr(&out));
    let out = run(&["run", "--rm", "busybox", "sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5));

    let id = ok(run(&[
        "run",
        "-d",
        "--name",
        "web",
        "busybox",
        "sh",
        "-c",
        "echo started; sleep 1000",
    ]));
    assert_eq!(id.len(), 64);
    let ps = ok(run(&["ps", "-a"]));
    assert!(ps.contains("web") && ps.contains("Up"), "{ps}");
    assert_eq!(
        ok(run(&["inspect", "--format", "{{.State.Status}}", "web"])),
        "running"
    );
    assert_eq!(ok(run(&["exec", "web", "echo", "inside"])), "inside");
    let tty = std::process::Command::new("script")
        .args(["-qec", &format!("{docker} exec -it web tty"), "/dev/null"])
        .env("DOCKER_HOST", d.host())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        stdout(&tty).contains("/dev/pts/"),
        "exec -it: {} {}",
        stdout(&tty),
        stderr(&tty)
    );
    let follow = d
        .docker_cmd(docker, &["logs", "-f", "web"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    ok(run(&["stop", "-t", "1", "web"]));
    let logs = follow.wait_with_output().unwrap();
    assert_eq!(stdout(&logs), "started\n");
    ok(run(&["rm", "-f", "web"]));

    let images = ok(run(&["images"]));
    assert!(
        images.contains("busybox") && images.contains("latest"),
        "{images}"
    );

    let dir = crate::harness::unique_dir("wharf-test-save");
    let tar = dir.join("busybox.tar");
    ok(run(&["save", "-o", tar.to_str().unwrap(), "busybox"]));
    ok(run(&["rmi", "busybox"]));
    let loaded = ok(run(&["load", "-i", tar.to_str().unwrap()]));
    assert!(loaded.contains("busybox:latest"), "{loaded}");
    assert_eq!(ok(run(&["run", "--rm", "busybox", "echo", "back"])), "back");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn docker_cli_28() {
    check_cli(DOCKER28);
}

#[test]
fn docker_cli_20() {
    check_cli(DOCKER20);
}

/// `docker system df` (and docker-py's `df()`) read what images and containers take.
#[test]
fn system_df() {
    let d = Daemon::with_busybox();
    let id = ok(d.wharf(&[
        "run",
        "-d",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "head -c 300000 /dev/zero > /big && sleep 100",
    ]));
    // The file is written once the shell runs; wait for it to show in the writable layer.
    let mut rows = String::new();
    for _ in 0..100 {
        rows = ok(d.docker(
            DOCKER28,
            &[
                "system",
                "df",
                "--format",
                "{{.Type}} {{.TotalCount}} {{.Active}} {{.Size}}",
            ],
        ));
        if rows.contains("Containers 1 1 300kB") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(rows.contains("Images 1 1 "), "{rows}");
    assert!(rows.contains("Containers 1 1 300kB"), "{rows}");
    assert!(rows.contains("Local Volumes 0 0 0B"), "{rows}");
    let verbose = ok(d.docker(DOCKER20, &["system", "df", "-v"]));
    assert!(
        verbose.contains(&id[..12]) && verbose.contains("busybox"),
        "{verbose}"
    );
    ok(d.wharf(&["rm", "-f", &id]));
    let rows = ok(d.docker(
        DOCKER28,
        &["system", "df", "--format", "{{.Type}} {{.TotalCount}}"],
    ));
    assert!(rows.contains("Containers 0"), "{rows}");
}
