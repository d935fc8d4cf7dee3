//! Run after the whole suite (scripts/test.sh does): nothing the tests made may remain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
#[ignore = "run explicitly after the suite"]
fn nothing_left_behind() {
    let mut leaks = Vec::new();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    for line in mounts.lines().filter(|l| l.contains("wharf-test")) {
        leaks.push(format!("mount: {line}"));
    }
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("wharf-test") {
            leaks.push(format!(
                "process {}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    for controller in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let dir = controller.path().join("wharf");
        let Ok(children) = std::fs::read_dir(&dir) else {
            continue;
        };
        for child in children.flatten().filter(|c| c.path().is_dir()) {
            leaks.push(format!("cgroup: {}", child.path().display()));
        }
    }
    let tmp = std::env::temp_dir();
    for entry in std::fs::read_dir(&tmp).unwrap().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("wharf-test")
        {
            leaks.push(format!(
                "directory: {}",
                Path::new(&tmp).join(entry.file_name()).display()
            ));
        }
    }
    assert!(leaks.is_empty(), "left behind:\n{}", leaks.join("\n"));
}
