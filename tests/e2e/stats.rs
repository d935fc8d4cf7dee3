//! `stats` from the container's cgroup, and `pause` through the runtime's freezer.

use crate::harness::{DOCKER28, Daemon, ok};

/// Bytes from a docker size ("1.5MiB", "64MiB", "512KiB", "12B").
fn bytes(size: &str) -> f64 {
    let size = size.trim();
    let split = size
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(size.len());
    let (n, unit) = size.split_at(split);
    let n: f64 = n.trim().parse().unwrap_or_else(|_| panic!("size {size:?}"));
    n * match unit {
        "B" => 1.0,
        "KiB" | "kB" => 1024.0,
        "MiB" | "MB" => 1024.0 * 1024.0,
        "GiB" | "GB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unit {other:?} in {size:?}"),
    }
}

#[test]
fn stats_show_the_cgroups_numbers() {
    let d = Daemon::with_busybox();
    // A busy loop (CPU) that also holds a few MiB in a tmpfs file (memory).
    let id = ok(d.wharf(&[
        "run",
        "-d",
        "--memory",
        "64m",
        "--pids-limit",
        "50",
        "--tmpfs",
        "/scratch",
        "busybox",
        "sh",
        "-c",
        "dd if=/dev/zero of=/scratch/f bs=1M count=8 2>/dev/null; while :; do :; done",
    ]));
    std::thread::sleep(std::time::Duration::from_millis(500));
    for (what, out) in [
        (
            "wharf",
            d.wharf(&[
                "stats",
                "--no-stream",
                "--format",
                "{{.CPUPerc}}|{{.MemUsage}}|{{.PIDs}}",
                &id,
            ]),
        ),
        (
            "docker",
            d.docker(
                DOCKER28,
                &[
                    "stats",
                    "--no-stream",
                    "--format",
                    "{{.CPUPerc}}|{{.MemUsage}}|{{.PIDs}}",
                    &id,
                ],
            ),
        ),
    ] {
        let line = ok(out);
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 3, "{what}: {line}");
        let cpu: f64 = fields[0].trim_end_matches('%').parse().unwrap();
        // One spinning process on a shared host: well above idle.
        assert!(cpu > 5.0, "{what}: cpu {line}");
        let (used, limit) = fields[1].split_once(" / ").unwrap();
        assert!(
            bytes(used) >= 8.0 * 1024.0 * 1024.0,
            "{what}: memory {line}"
        );
        assert_eq!(bytes(limit), 64.0 * 1024.0 * 1024.0, "{what}: limit {line}");
        let pids: u64 = fields[2].parse().unwrap();
        assert!(pids >= 1, "{what}: pids {line}");
    }
    ok(d.wharf(&["rm", "-f", &id]));
    // A stopped container has zeroes, not an error.
    let id = ok(d.wharf(&["create", "busybox", "true"]));
    let line = ok(d.wharf(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.MemUsage}}|{{.PIDs}}",
        &id,
    ]));
    assert_eq!(line, "0B / 0B|0", "{line}");
    ok(d.wharf(&["rm", &id]));
}

/// The freezer state of a container's cgroup, from whichever hierarchy has the freezer.
fn frozen(id: &str) -> bool {
    let v1 = format!("/sys/fs/cgroup/freezer/wharf/{id}/freezer.state");
    match std::fs::read_to_string(&v1) {
        Ok(s) => s.trim() == "FROZEN",
        Err(_) => {
            let v2 = format!("/sys/fs/cgroup/wharf/{id}/cgroup.freeze");
            std::fs::read_to_string(&v2).unwrap().trim() == "1"
        }
    }
}

#[test]
fn pause_freezes_the_cgroup_and_unpause_thaws_it() {
    let d = Daemon::with_busybox();
    let id = ok(d.wharf(&[
        "run",
        "-d",
        "busybox",
        "sh",
        "-c",
        "while :; do date +%s%N > /tmp/tick; done",
    ]));
    assert!(!frozen(&id));
    ok(d.wharf(&["pause", &id]));
    assert!(frozen(&id));
    let status = ok(d.wharf(&["inspect", "-f", "{{.State.Status}}", &id]));
    assert_eq!(status, "paused");
    // Frozen: the loop makes no progress (no tick file changes while paused).
    let tick = |d: &Daemon| {
        let pid = ok(d.wharf(&["inspect", "-f", "{{.State.Pid}}", &id]));
        std::fs::read_to_string(format!("/proc/{pid}/root/tmp/tick")).unwrap_or_default()
    };
    let before = tick(&d);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(tick(&d), before);
    ok(d.wharf(&["unpause", &id]));
    assert!(!frozen(&id));
    // Thawed: the loop moves on (however loaded the host is).
    let mut moved = false;
    for _ in 0..200 {
        if tick(&d) != before {
            moved = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(moved, "no progress after unpause");
    // A paused container is thawed on its way out.
    ok(d.wharf(&["pause", &id]));
    ok(d.wharf(&["rm", "-f", &id]));
    assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/freezer/wharf/{id}")).exists());
    assert_eq!(ok(d.wharf(&["ps", "-aq"])), "");
}
