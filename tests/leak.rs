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
    // Network state of test daemons: their bridges are `wt<pid>-<n>` (and `wt-*`, `wh-*` for
    // user networks), host veth ends `whv*`, nftables tables `wharf-wt*`.
    let links = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    for line in links.lines() {
        let name = line.split(':').nth(1).unwrap_or_default().trim();
        let name = name.split('@').next().unwrap_or_default();
        if name.starts_with("wt") || name.starts_with("wh-") || name.starts_with("whv") {
            leaks.push(format!("link: {name}"));
        }
    }
    let tables = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    for t in tables.lines().filter(|t| t.contains("wharf-wt")) {
        leaks.push(format!("nftables: {t}"));
    }
    let rules = std::process::Command::new("iptables")
        .args(["-w", "-S", "FORWARD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    for r in rules.lines() {
        if r.split_whitespace()
            .any(|w| w.starts_with("wt") || w.starts_with("wh-"))
        {
            leaks.push(format!("iptables: {r}"));
        }
    }
    assert!(leaks.is_empty(), "left behind:\n{}", leaks.join("\n"));
}
