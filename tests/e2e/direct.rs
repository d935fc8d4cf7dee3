//! The runtime's two create paths: the direct one (the default for the specs wharf writes on
//! cgroup v1) and libcontainer (`WHARF_LIBCONTAINER`, and every spec the direct one refuses).

use std::path::Path;
use std::process::Command;

use crate::harness::{Daemon, busybox_tar, ok, stderr, unique_dir};
use crate::limits::assert_default_confinement;

/// libcontainer leaves its notify socket in the container's state directory; the direct path
/// has none.
fn made_by_libcontainer(d: &Daemon, id: &str) -> bool {
    d.run.join("runtime").join(id).join("notify.sock").exists()
}

fn same_behaviour(d: &Daemon, libcontainer: bool) {
    assert_eq!(ok(d.wharf(&["run", "--rm", "busybox", "echo", "hi"])), "hi");
    let out = d.wharf(&["run", "--rm", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    let out = d.wharf(&["run", "--rm", "busybox", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("executable file not found"),
        "{}",
        stderr(&out)
    );
    let status = ok(d.wharf(&["run", "--rm", "busybox", "cat", "/proc/self/status"]));
    assert_default_confinement(&status);
    // HOME comes from the image's /etc/passwd when the environment has none; a working
    // directory the image lacks is made (the direct path does it as runc does).
    let cwd = if libcontainer { "/" } else { "/new/dir" };
    assert_eq!(
        ok(d.wharf(&[
            "run",
            "--rm",
            "-w",
            cwd,
            "busybox",
            "sh",
            "-c",
            "echo $HOME $PWD"
        ])),
        format!("/root {cwd}")
    );

    let id = ok(d.wharf(&[
        "run",
        "-d",
        "--memory",
        "64m",
        "--pids-limit",
        "50",
        "busybox",
        "sleep",
        "1000",
    ]));
    let id = id.trim();
    assert_eq!(made_by_libcontainer(d, id), libcontainer);
    assert_eq!(
        ok(d.wharf(&["exec", id, "cat", "/sys/fs/cgroup/pids/pids.max"])),
        "50"
    );
    assert_eq!(
        ok(d.wharf(&[
            "exec",
            id,
            "cat",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes"
        ])),
        (64 * 1024 * 1024).to_string()
    );
    ok(d.wharf(&["pause", id]));
    ok(d.wharf(&["unpause", id]));
    assert_eq!(ok(d.wharf(&["exec", id, "hostname"])), &id[..12]);
    ok(d.wharf(&["rm", "-f", id]));
}

#[test]
fn both_create_paths_behave_alike() {
    let d = Daemon::with_busybox();
    same_behaviour(&d, false);
    // The direct path's own stricter view: cgroups read-only, nothing of the host's.
    let mounts = ok(d.wharf(&["run", "--rm", "busybox", "cat", "/proc/self/mountinfo"]));
    let cgroup = mounts
        .lines()
        .find(|l| l.contains(" /sys/fs/cgroup/memory "))
        .unwrap_or_else(|| panic!("no memory cgroup in\n{mounts}"));
    assert!(cgroup.contains(" ro,"), "{cgroup}");
    let mounts = ok(d.wharf(&[
        "run",
        "--rm",
        "--privileged",
        "busybox",
        "cat",
        "/proc/self/mountinfo",
    ]));
    let cgroup = mounts
        .lines()
        .find(|l| l.contains(" /sys/fs/cgroup/memory "))
        .unwrap();
    assert!(cgroup.contains(" rw,"), "{cgroup}");
    drop(d);
    let d = Daemon::with_busybox_env(&[("WHARF_LIBCONTAINER", "1")]);
    same_behaviour(&d, true);
}

/// An image whose /etc files are symlinks out of the rootfs: the bind mounts of hosts,
/// hostname and resolv.conf land inside the rootfs, never on the host.
#[test]
fn image_symlinks_keep_mounts_inside_the_rootfs() {
    let d = Daemon::with_busybox();
    let work = unique_dir("wharf-evil");
    let outside = work.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let img = work.join("img");
    std::fs::create_dir_all(&img).unwrap();
    let status = Command::new("tar")
        .arg("-C")
        .arg(&img)
        .arg("-xf")
        .arg(busybox_tar())
        .status()
        .unwrap();
    assert!(status.success());
    let etc = img.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    for (name, target) in [
        ("hosts", outside.join("hosts")),
        ("hostname", outside.join("hostname")),
        (
            "resolv.conf",
            Path::new("../run/systemd/resolve/stub-resolv.conf").to_path_buf(),
        ),
    ] {
        let _ = std::fs::remove_file(etc.join(name));
        std::os::unix::fs::symlink(&target, etc.join(name)).unwrap();
    }
    let tar = work.join("evil.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&img)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    ok(d.wharf(&["import", tar.to_str().unwrap(), "evil:latest"]));
    let out = ok(d.wharf(&[
        "run",
        "--rm",
        "--hostname",
        "inside",
        "evil:latest",
        "sh",
        "-c",
        "cat /etc/hostname; grep -c inside /etc/hosts; test -s /etc/resolv.conf && echo resolv",
    ]));
    assert_eq!(out, "inside\n1\nresolv");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    std::fs::remove_dir_all(&work).unwrap();
}
