//! End-to-end tests: the real binary, a real daemon on a temporary root, real containers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod shim;

#[test]
fn busybox_rootfs_is_made() {
    let tar = harness::busybox_tar();
    let out = std::process::Command::new("tar")
        .arg("tf")
        .arg(tar)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.lines().any(|l| l == "./bin/busybox"), "{list}");
    assert!(list.lines().any(|l| l == "./bin/sh"), "{list}");
}

mod build;
mod direct;
mod docker_cli;
mod docker_py;
mod limits;
mod network;
mod registry;
mod restart;
mod run;
mod stats;
