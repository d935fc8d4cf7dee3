//! Hostile layers are refused with a clear error; nothing outside the snapshot is written and
//! the store is unchanged. Each case goes through import and through load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod images_common;

use images_common::{RawTar, TestStore, dir_names, docker_archive};
use tar::EntryType;
use wharf_engine::error::ErrorKind;

/// The snapshot being unpacked is `<base>/root/snapshots/tmp-*/fs`: four levels below base.
const UP: &str = "../../../..";

fn good_layer() -> Vec<u8> {
    RawTar::new()
        .dir("etc/", 0o755)
        .file("etc/hostname", b"good\n")
        .finish()
}

/// Imports and loads `layer` into a store that already holds one image, and checks both are
/// refused with `expect` in the message while nothing changes.
fn assert_refused(make: impl Fn(&str) -> Vec<u8>, expect: &str) {
    let t = TestStore::new();
    let base = t.base.path().to_path_buf();
    t.import(&mut &good_layer()[..], &[], Some("good:1"), None)
        .unwrap();
    let canary = base.join("canary");
    std::fs::write(&canary, "original").unwrap();
    let layer = make(base.to_str().unwrap());
    let outside = dir_names(&base);
    let before = t.state();

    let err = t
        .import(&mut &layer[..], &[], Some("evil:1"), None)
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains(expect), "import: {text:?} lacks {expect:?}");
    assert!(text.starts_with("refusing layer: "), "{text}");
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "original");
    assert_eq!(dir_names(&base), outside);
    assert_eq!(t.state(), before);

    let (archive, _) = docker_archive(&[good_layer(), layer.clone()], Some("evil:2"));
    let err = t.load(&mut &archive[..]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(expect), "load: {text:?} lacks {expect:?}");
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "original");
    assert_eq!(dir_names(&base), outside);
    assert_eq!(t.state(), before);
    assert!(t.resolve("evil:1").is_err() && t.resolve("evil:2").is_err());
}

#[test]
fn dotdot_entries_are_refused() {
    assert_refused(
        |_| {
            RawTar::new()
                .file(&format!("{UP}/canary"), b"pwned")
                .finish()
        },
        "has a \"..\" component in its name",
    );
    assert_refused(
        |_| {
            RawTar::new()
                .dir("a/", 0o755)
                .file(&format!("a/{UP}/../canary"), b"pwned")
                .finish()
        },
        "has a \"..\" component in its name",
    );
    assert_refused(
        |_| RawTar::new().dir(&format!("{UP}/newdir/"), 0o755).finish(),
        "has a \"..\" component",
    );
}

#[test]
fn absolute_entries_are_refused() {
    assert_refused(
        |base| {
            RawTar::new()
                .file(&format!("{base}/canary"), b"pwned")
                .finish()
        },
        "has an absolute name",
    );
}

#[test]
fn escaping_symlinks_are_refused() {
    assert_refused(
        |_| RawTar::new().symlink("esc", &format!("{UP}/..")).finish(),
        "is a symlink that escapes the layer root",
    );
    assert_refused(
        |_| {
            RawTar::new()
                .dir("a/", 0o755)
                .symlink("a/up", "../../x")
                .finish()
        },
        "is a symlink that escapes the layer root",
    );
}

#[test]
fn writes_through_symlinks_are_refused() {
    // Absolute target: resolved on the host it would be the test's base directory.
    assert_refused(
        |base| {
            RawTar::new()
                .symlink("out", base)
                .file("out/canary", b"pwned")
                .finish()
        },
        "goes through a symlink",
    );
    assert_refused(
        |_| {
            RawTar::new()
                .symlink("dotdot", "..")
                .file("dotdot/canary", b"pwned")
                .finish()
        },
        "escapes",
    );
    // Even a link that stays inside is not a path to write through.
    assert_refused(
        |_| {
            RawTar::new()
                .dir("sub/", 0o755)
                .symlink("alias", "sub")
                .file("alias/f", b"x")
                .finish()
        },
        "goes through a symlink",
    );
    assert_refused(
        |base| {
            RawTar::new()
                .symlink("out", base)
                .dir("out/newdir/", 0o755)
                .finish()
        },
        "goes through a symlink",
    );
}

#[test]
fn escaping_hardlinks_are_refused() {
    assert_refused(
        |_| {
            RawTar::new()
                .hardlink("h", &format!("{UP}/canary"))
                .finish()
        },
        "has a \"..\" component in its hardlink target",
    );
    assert_refused(
        |base| {
            RawTar::new()
                .hardlink("h", &format!("{base}/canary"))
                .finish()
        },
        "has an absolute hardlink target",
    );
    assert_refused(
        |_| RawTar::new().hardlink("h", "etc/missing").finish(),
        "not in this layer",
    );
    assert_refused(
        |base| {
            RawTar::new()
                .symlink("out", base)
                .hardlink("h", "out/canary")
                .finish()
        },
        "goes through a symlink",
    );
}

#[test]
fn device_nodes_are_refused() {
    assert_refused(
        |_| RawTar::new().device("null", EntryType::Char, 1, 3).finish(),
        "is a device node",
    );
    assert_refused(
        |_| {
            RawTar::new()
                .dir("x/", 0o755)
                .device("x/sda", EntryType::Block, 8, 0)
                .finish()
        },
        "is a device node",
    );
}

#[test]
fn whiteouts_of_dot_and_dotdot_are_refused() {
    assert_refused(
        |_| RawTar::new().file(".wh...", b"").finish(),
        "is a whiteout of \".\" or \"..\"",
    );
    assert_refused(
        |_| RawTar::new().dir("d/", 0o755).file("d/.wh..", b"").finish(),
        "is a whiteout of \".\" or \"..\"",
    );
}

#[test]
fn a_layer_that_lies_about_its_diff_id_is_refused() {
    let t = TestStore::new();
    let before = t.state();
    let (mut archive, _) = docker_archive(&[good_layer()], Some("liar:1"));
    // Same length, other content: flip a byte of the layer's file data.
    let pos = archive.windows(5).position(|w| w == b"good\n").unwrap();
    archive[pos] = b'G';
    let err = t.load(&mut &archive[..]).unwrap_err();
    assert!(err.to_string().contains("diff id"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert_eq!(t.state(), before);
}

#[test]
fn archives_with_bad_members_are_refused() {
    let t = TestStore::new();
    let before = t.state();
    let bad = RawTar::new().file("../manifest.json", b"[]").finish();
    let err = t.load(&mut &bad[..]).unwrap_err();
    assert!(err.to_string().contains("\"..\""), "{err}");
    let empty = RawTar::new().file("hello", b"x").finish();
    let err = t.load(&mut &empty[..]).unwrap_err();
    assert!(err.to_string().contains("neither manifest.json"), "{err}");
    // A blob whose content does not match its name.
    let fake = format!("blobs/sha256/{}", "a".repeat(64));
    let lying = RawTar::new()
        .dir("blobs/", 0o755)
        .dir("blobs/sha256/", 0o755)
        .file(&fake, b"not that")
        .file("index.json", br#"{"schemaVersion":2,"manifests":[]}"#)
        .finish();
    let err = t.load(&mut &lying[..]).unwrap_err();
    assert!(
        err.to_string().contains("does not match its digest"),
        "{err}"
    );
    assert_eq!(t.state(), before);
}
