//! Resource limits and security defaults, checked from inside real containers.

use crate::harness::{Daemon, ok, stderr};

#[test]
fn memory_limit_oom_kills() {
    let d = Daemon::with_busybox();
    // `head | tr` into a shell variable makes the shell hold ~64 MiB.
    let out = d.wharf(&[
        "run",
        "--name",
        "hog",
        "--memory",
        "32m",
        "busybox",
        "sh",
        "-c",
        "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo ${#x}",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(
        ok(d.wharf(&["inspect", "-f", "{{.State.OOMKilled}}", "hog"])),
        "true"
    );
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let d = Daemon::with_busybox();
    let id = ok(d.wharf(&[
        "run",
        "-d",
        "--pids-limit",
        "10",
        "busybox",
        "sh",
        "-c",
        "(for i in $(seq 1 50); do sleep 1000 & done) 2>/dev/null; exec sleep 1000",
    ]));
    std::thread::sleep(std::time::Duration::from_millis(800));
    let dir = format!("/sys/fs/cgroup/pids/wharf/{id}");
    let current: u32 = std::fs::read_to_string(format!("{dir}/pids.current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let events = std::fs::read_to_string(format!("{dir}/pids.events")).unwrap();
    assert!(current <= 10, "{current} pids under a limit of 10");
    assert!(!events.contains("max 0"), "no fork was refused: {events}");
    ok(d.wharf(&["rm", "-f", &id]));
}

#[test]
fn cpus_land_in_the_cgroup() {
    let d = Daemon::with_busybox();
    let id = ok(d.wharf(&["run", "-d", "--cpus", "0.5", "busybox", "sleep", "100"]));
    let v1 = format!("/sys/fs/cgroup/cpu/wharf/{id}/cpu.cfs_quota_us");
    let v2 = format!("/sys/fs/cgroup/wharf/{id}/cpu.max");
    let quota = std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .unwrap();
    assert!(quota.starts_with("50000"), "{quota}");
    ok(d.wharf(&["rm", "-f", &id]));
}

/// Docker's default confinement: seccomp filtering and exactly its default capabilities in the
/// effective, permitted and bounding sets, none inheritable or ambient.
pub fn assert_default_confinement(status: &str) {
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "{status}");
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert!(
            status
                .lines()
                .any(|l| l == format!("{set}:\t00000000a80425fb")),
            "{status}"
        );
    }
    for set in ["CapInh", "CapAmb"] {
        assert!(
            status
                .lines()
                .any(|l| l == format!("{set}:\t0000000000000000")),
            "{status}"
        );
    }
}

#[test]
fn default_security_profile() {
    let d = Daemon::with_busybox();
    let status = ok(d.wharf(&["run", "--rm", "busybox", "cat", "/proc/self/status"]));
    assert_default_confinement(&status);
    // Also as another user (libcontainer sets the ids before the capabilities), and for a
    // process started by exec: CAP_SYS_ADMIN, held while the precompiled filter is loaded,
    // must be gone from every set.
    let status = ok(d.wharf(&[
        "run",
        "--rm",
        "-u",
        "1000",
        "busybox",
        "cat",
        "/proc/self/status",
    ]));
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "{status}");
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert!(
            status
                .lines()
                .any(|l| l == format!("{set}:\t0000000000000000")),
            "{status}"
        );
    }
    let id = ok(d.wharf(&["run", "-d", "busybox", "sleep", "1000"]));
    let id = id.trim();
    let status = ok(d.wharf(&["exec", id, "cat", "/proc/self/status"]));
    assert_default_confinement(&status);
    let status = ok(d.wharf(&["exec", "-u", "1000", id, "cat", "/proc/self/status"]));
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "{status}");
    assert!(
        status.lines().any(|l| l == "CapPrm:\t0000000000000000"),
        "{status}"
    );
    ok(d.wharf(&["rm", "-f", id]));
    let out = d.wharf(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo h > /proc/sysrq-trigger",
    ]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    let status = ok(d.wharf(&[
        "run",
        "--rm",
        "--privileged",
        "busybox",
        "cat",
        "/proc/self/status",
    ]));
    assert!(status.lines().any(|l| l == "Seccomp:\t0"), "{status}");
    assert!(
        !status.lines().any(|l| l == "CapEff:\t00000000a80425fb"),
        "{status}"
    );
    let status = ok(d.wharf(&[
        "run",
        "--rm",
        "--cap-drop",
        "ALL",
        "busybox",
        "cat",
        "/proc/self/status",
    ]));
    assert!(
        status.lines().any(|l| l == "CapEff:\t0000000000000000"),
        "{status}"
    );
}

#[test]
fn rlimits_above_the_host_are_clamped() {
    let d = Daemon::with_busybox();
    let out = d.wharf(&[
        "run",
        "--rm",
        "--ulimit",
        "nofile=1048576:1048576",
        "busybox",
        "sh",
        "-c",
        "ulimit -n",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let n: u64 = crate::harness::stdout(&out).trim().parse().unwrap();
    assert!(n <= 1048576 && n > 0);
}
