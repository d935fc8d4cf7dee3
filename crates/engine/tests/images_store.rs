//! The image store: import, names, unpack in overlay form, tag, remove, prune, save and load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod images_common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use images_common::{RawTar, TestStore, busybox_tar, dir_names, docker_archive, gzip};
use tar::EntryType;
use wharf_engine::error::ErrorKind;
use wharf_engine::image::InUse;

fn layer() -> Vec<u8> {
    RawTar::new()
        .dir("bin/", 0o755)
        .file_owned("bin/tool", b"#!/bin/sh\necho tool\n", 0o4755, 0, 0)
        .file_owned("home/u/own", b"mine", 0o600, 1000, 1001)
        .symlink("bin/sh", "/bin/busybox")
        .symlink("bin/rel", "tool")
        .hardlink("bin/tool2", "bin/tool")
        .dir("opaque/", 0o700)
        .file("opaque/.wh..wh..opq", b"")
        .file("gone/.wh.old", b"")
        .fifo("pipe")
        .device("dev/null", EntryType::Char, 1, 3)
        .device("wo", EntryType::Char, 0, 0)
        .file("bin/tool", b"second version wins")
        .finish()
}

#[test]
fn import_unpacks_in_overlay_form() {
    let t = TestStore::new();
    let changes = vec![
        r#"CMD ["sh"]"#.to_string(),
        "ENV A=1".to_string(),
        "LABEL x=y".to_string(),
    ];
    let image = t
        .import(
            &mut &gzip(&layer())[..],
            &changes,
            Some("demo"),
            Some("hello"),
        )
        .unwrap();
    assert!(image.id.starts_with("sha256:") && image.id.len() == 71);
    assert_eq!(image.repo_tags, vec!["demo:latest"]);
    assert_eq!(image.config.cmd.as_deref(), Some(&["sh".to_string()][..]));
    assert_eq!(image.os, "linux");
    assert_eq!(
        image.size,
        (b"second version wins".len() + b"#!/bin/sh\necho tool\n".len() + 4) as u64
    );
    let dirs = t.lower_dirs(&image).unwrap();
    assert_eq!(dirs.len(), 1);
    let fs = &dirs[0];
    assert!(fs.starts_with(t.root().join("snapshots")));

    let tool = std::fs::metadata(fs.join("bin/tool")).unwrap();
    assert_eq!(
        std::fs::read(fs.join("bin/tool")).unwrap(),
        b"second version wins"
    );
    assert_eq!(tool.permissions().mode() & 0o7777, 0o644);
    // The hardlink was made to the first version, which the later entry replaced.
    let tool2 = std::fs::metadata(fs.join("bin/tool2")).unwrap();
    assert_eq!(tool2.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(tool2.nlink(), 1);
    let own = std::fs::metadata(fs.join("home/u/own")).unwrap();
    assert_eq!((own.uid(), own.gid()), (1000, 1001));
    assert_eq!(own.mtime(), 1_700_000_000);
    assert_eq!(
        std::fs::read_link(fs.join("bin/sh")).unwrap().to_str(),
        Some("/bin/busybox")
    );
    assert_eq!(
        std::fs::read_link(fs.join("bin/rel")).unwrap().to_str(),
        Some("tool")
    );
    let wh = std::fs::symlink_metadata(fs.join("gone/old")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert!(!fs.join("gone/.wh.old").exists());
    assert!(
        std::fs::symlink_metadata(fs.join("wo"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert_eq!(
        xattr::get(fs.join("opaque"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );
    assert!(!fs.join("opaque/.wh..wh..opq").exists());
    assert!(
        std::fs::symlink_metadata(fs.join("pipe"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    // Device nodes under dev/ are skipped, not refused.
    assert!(!fs.join("dev/null").exists());

    let inspect = serde_json::to_value(t.inspect(&image)).unwrap();
    assert_eq!(inspect["Id"], image.id);
    assert_eq!(inspect["RepoTags"][0], "demo:latest");
    assert_eq!(inspect["RepoDigests"], serde_json::json!([]));
    assert_eq!(inspect["Comment"], "hello");
    assert_eq!(inspect["Config"]["Cmd"][0], "sh");
    assert_eq!(inspect["Config"]["Env"][0], "A=1");
    assert_eq!(inspect["Config"]["Labels"]["x"], "y");
    assert_eq!(inspect["RootFS"]["Type"], "layers");
    assert_eq!(inspect["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(inspect["GraphDriver"]["Name"], "overlay2");
    assert_eq!(inspect["Os"], "linux");
    assert!(inspect["Created"].as_str().unwrap().ends_with('Z'));
    assert!(inspect["Metadata"]["LastTagTime"].is_string());

    let summary = serde_json::to_value(t.summary(&image)).unwrap();
    assert_eq!(summary["Containers"], -1);
    assert_eq!(summary["Labels"]["x"], "y");
    assert_eq!(summary["RepoDigests"], serde_json::json!([]));
    assert!(summary["Created"].as_i64().unwrap() > 1_700_000_000);

    let history = t.history("demo").unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].id, image.id);
    assert_eq!(history[0].comment, "hello");
    assert_eq!(history[0].tags, vec!["demo:latest"]);
}

#[test]
fn names_resolve_like_docker() {
    let t = TestStore::new();
    let image = t
        .import(&mut &layer()[..], &[], Some("busybox:latest"), None)
        .unwrap();
    let hex = image.id.trim_start_matches("sha256:").to_string();
    t.tag("busybox", "localhost:5000/x:y").unwrap();
    for name in [
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox:latest",
        "docker.io/library/busybox",
        "localhost:5000/x:y",
        &image.id,
        &hex,
        &hex[..12],
        &hex[..4],
        &format!("sha256:{}", &hex[..10]),
        &format!("busybox@{}", image.manifest_digest()),
    ] {
        assert_eq!(t.resolve(name).unwrap().id, image.id, "{name}");
    }
    let err = t.resolve("nonexistent").unwrap_err();
    assert_eq!(err.to_string(), "No such image: nonexistent:latest");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        t.resolve("busybox:other").unwrap_err().to_string(),
        "No such image: busybox:other"
    );
    let err = t.tag("busybox", "Bad:Name").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    let mut tags = t.resolve("busybox").unwrap().repo_tags;
    tags.sort();
    assert_eq!(tags, vec!["busybox:latest", "localhost:5000/x:y"]);
    assert_eq!(t.list().unwrap().len(), 1);
}

#[test]
fn tags_move_and_remove_follows_docker_rules() {
    let t = TestStore::new();
    let a = t
        .import(&mut &layer()[..], &[], Some("app:1"), None)
        .unwrap();
    let b = t
        .import(
            &mut &RawTar::new().file("f", b"other").finish()[..],
            &[],
            Some("app:2"),
            None,
        )
        .unwrap();
    t.tag("app:1", "app:extra").unwrap();
    let snaps_before = dir_names(&t.root().join("snapshots"));
    assert_eq!(snaps_before.len(), 2);

    // Two names: the first rmi only untags.
    let no = |_: &str| InUse::No;
    let items = t.remove("app:extra", false, &no).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].untagged.as_deref(), Some("app:extra"));
    assert_eq!(t.resolve("app:1").unwrap().id, a.id);

    // In use by a stopped container: refused without force.
    let stopped = |id: &str| {
        if id == a.id {
            InUse::Stopped("c0ffee00c0ffee00".into())
        } else {
            InUse::No
        }
    };
    let err = t.remove("app:1", false, &stopped).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(
        err.to_string()
            .contains("container c0ffee00c0ff is using its referenced image"),
        "{err}"
    );
    let err = t.remove(&a.id, false, &stopped).unwrap_err();
    assert!(
        err.to_string()
            .contains("(must be forced) - image is being used by stopped container"),
        "{err}"
    );
    assert!(t.resolve("app:1").is_ok());

    // Running: even force by id cannot delete it; force by name untags only.
    let running = |id: &str| {
        if id == b.id {
            InUse::Running("feedfacefeedface".into())
        } else {
            InUse::No
        }
    };
    let err = t.remove(&b.id, true, &running).unwrap_err();
    assert!(
        err.to_string()
            .contains("(cannot be forced) - image is being used by running container feedfacefeed"),
        "{err}"
    );
    let items = t.remove("app:2", true, &running).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].untagged.as_deref(), Some("app:2"));
    let dangling = t.resolve(&b.id).unwrap();
    assert!(dangling.repo_tags.is_empty());

    // Forced while a stopped container uses it: gone from names, layers kept for it.
    let items = t.remove("app:1", true, &stopped).unwrap();
    assert_eq!(items[0].untagged.as_deref(), Some("app:1"));
    assert_eq!(items[1].deleted.as_deref(), Some(a.id.as_str()));
    assert!(t.resolve(&a.id).is_err());
    assert_eq!(t.list().unwrap().len(), 1);
    assert_eq!(t.lower_dirs_by_id(&a.id).unwrap().len(), 1);
    assert_eq!(dir_names(&t.root().join("snapshots")), snaps_before);

    // Once no container uses them, prune frees both.
    let (items, freed) = t.prune(false, &no).unwrap();
    assert!(freed > 0);
    assert!(
        items
            .iter()
            .any(|i| i.deleted.as_deref() == Some(b.id.as_str()))
    );
    assert!(t.list().unwrap().is_empty());
    assert!(dir_names(&t.root().join("snapshots")).is_empty());
    assert!(dir_names(&t.root().join("content/blobs/sha256")).is_empty());
    assert!(t.lower_dirs_by_id(&a.id).is_err());
}

#[test]
fn remove_by_id_with_several_repositories_needs_force() {
    let t = TestStore::new();
    let a = t.import(&mut &layer()[..], &[], Some("one"), None).unwrap();
    t.tag("one", "two").unwrap();
    let no = |_: &str| InUse::No;
    let err = t.remove(&a.id[7..19], false, &no).unwrap_err();
    assert!(
        err.to_string()
            .contains("image is referenced in multiple repositories"),
        "{err}"
    );
    let items = t.remove(&a.id[7..19], true, &no).unwrap();
    let untagged: Vec<_> = items.iter().filter_map(|i| i.untagged.clone()).collect();
    assert_eq!(untagged.len(), 2);
    assert!(
        items
            .iter()
            .any(|i| i.deleted.as_deref() == Some(a.id.as_str()))
    );
    // The layer's chain id is reported deleted too, as Docker does.
    assert_eq!(items.iter().filter(|i| i.deleted.is_some()).count(), 2);
    assert!(t.list().unwrap().is_empty());
    assert_eq!(
        t.remove("one", false, &no).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn prune_all_spares_images_in_use() {
    let t = TestStore::new();
    let a = t
        .import(&mut &layer()[..], &[], Some("keep"), None)
        .unwrap();
    t.import(
        &mut &RawTar::new().file("f", b"x").finish()[..],
        &[],
        Some("drop"),
        None,
    )
    .unwrap();
    let used = |id: &str| {
        if id == a.id {
            InUse::Running("abc".into())
        } else {
            InUse::No
        }
    };
    let (items, _) = t.prune(false, &used).unwrap();
    assert!(items.is_empty(), "tagged images are not dangling");
    let (items, freed) = t.prune(true, &used).unwrap();
    assert!(freed > 0);
    assert_eq!(items[0].untagged.as_deref(), Some("drop:latest"));
    let left: Vec<_> = t.list().unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(left, vec![a.id]);
}

#[test]
fn save_and_load_round_trip_with_shared_layers() {
    let src = TestStore::new();
    let base = RawTar::new().file("base", b"base layer").finish();
    let top = RawTar::new()
        .dir("etc/", 0o755)
        .file("etc/.wh.gone", b"")
        .file("top", b"top layer")
        .finish();
    let (one, one_id) = docker_archive(std::slice::from_ref(&base), Some("one:v1"));
    let (two, two_id) = docker_archive(&[base.clone(), top], Some("reg.local:5000/two:v2"));
    assert_eq!(
        src.load(&mut &one[..]).unwrap(),
        vec!["Loaded image: one:v1"]
    );
    assert_eq!(
        src.load(&mut &two[..]).unwrap(),
        vec!["Loaded image: reg.local:5000/two:v2"]
    );
    let two_img = src.resolve("reg.local:5000/two:v2").unwrap();
    assert_eq!(two_img.id, two_id);
    assert_eq!(src.lower_dirs(&two_img).unwrap().len(), 2);
    // The base layer is shared: three snapshots would mean it was unpacked twice.
    assert_eq!(dir_names(&src.root().join("snapshots")).len(), 2);
    let history = src.history("reg.local:5000/two:v2").unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].created_by, "layer 1");
    assert_eq!(history[1].id, "<missing>");
    t_tag_untagged(&src, &one_id);

    let mut saved = Vec::new();
    src.save(
        &[
            "one".to_string(),
            "reg.local:5000/two:v2".to_string(),
            one_id[7..19].to_string(),
        ],
        &mut saved,
    )
    .unwrap();
    let names = archive_names(&saved);
    for n in ["index.json", "manifest.json", "oci-layout", "repositories"] {
        assert!(names.contains(&n.to_string()), "{n} missing from {names:?}");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&member(&saved, "manifest.json")).unwrap();
    assert_eq!(manifest.as_array().unwrap().len(), 2);
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!(["one:also", "one:v1"])
    );
    let index: serde_json::Value = serde_json::from_slice(&member(&saved, "index.json")).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 3);
    assert_eq!(
        index["manifests"][1]["annotations"]["io.containerd.image.name"],
        "docker.io/library/one:v1"
    );
    assert_eq!(
        index["manifests"][1]["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );

    let dst = TestStore::new();
    let mut lines = dst.load(&mut &saved[..]).unwrap();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "Loaded image: one:also",
            "Loaded image: one:v1",
            "Loaded image: reg.local:5000/two:v2"
        ]
    );
    assert_eq!(dst.resolve("one:v1").unwrap().id, one_id);
    assert_eq!(dst.resolve("reg.local:5000/two:v2").unwrap().id, two_id);
    let fs = dst.lower_dirs(&dst.resolve(&two_id).unwrap()).unwrap();
    assert_eq!(std::fs::read(fs[0].join("top")).unwrap(), b"top layer");
    assert_eq!(std::fs::read(fs[1].join("base")).unwrap(), b"base layer");
    assert!(
        std::fs::symlink_metadata(fs[0].join("etc/gone"))
            .unwrap()
            .file_type()
            .is_char_device()
    );

    // The same archive again changes nothing and says the same.
    let before = dst.state();
    assert_eq!(dst.load(&mut &saved[..]).unwrap().len(), 3);
    assert_eq!(dst.state(), before);

    // Loading after a restart still finds everything; untagged save gives an untagged load.
    let mut dst = dst;
    dst.reopen();
    assert_eq!(dst.list().unwrap().len(), 2);
    let mut by_id = Vec::new();
    src.save(std::slice::from_ref(&two_id), &mut by_id).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&member(&by_id, "manifest.json")).unwrap();
    assert_eq!(manifest[0]["RepoTags"], serde_json::json!([]));
    let third = TestStore::new();
    assert_eq!(
        third.load(&mut &by_id[..]).unwrap(),
        vec![format!("Loaded image ID: {two_id}")]
    );
    assert!(third.resolve(&two_id).unwrap().repo_tags.is_empty());

    let err = src
        .save(&["missing".to_string()], &mut Vec::new())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

fn t_tag_untagged(t: &TestStore, id: &str) {
    t.tag(id, "one:also").unwrap();
    assert_eq!(t.resolve("one:also").unwrap().id, id);
}

#[test]
fn moving_a_tag_on_load_is_reported() {
    let t = TestStore::new();
    let (a, a_id) = docker_archive(&[RawTar::new().file("a", b"a").finish()], Some("x:1"));
    let (b, _) = docker_archive(&[RawTar::new().file("b", b"b").finish()], Some("x:1"));
    t.load(&mut &a[..]).unwrap();
    let lines = t.load(&mut &b[..]).unwrap();
    assert_eq!(
        lines[0],
        format!(
            "The image x:1 already exists, renaming the old one with ID {a_id} to empty string"
        )
    );
    assert!(t.resolve(&a_id).unwrap().repo_tags.is_empty());
}

#[test]
fn reopen_cleans_leftovers_and_keeps_images() {
    let mut t = TestStore::new();
    let image = t
        .import(&mut &layer()[..], &[], Some("keep"), None)
        .unwrap();
    let root = t.root();
    std::fs::create_dir_all(root.join("snapshots/tmp-leftover/fs")).unwrap();
    std::fs::write(root.join("content/ingest/partial"), b"x").unwrap();
    let orphan = format!("{:064x}", 7);
    std::fs::write(root.join("content/blobs/sha256").join(&orphan), b"orphan").unwrap();
    std::fs::create_dir_all(root.join("snapshots").join(&orphan).join("fs")).unwrap();
    t.reopen();
    assert!(dir_names(&root.join("content/ingest")).is_empty());
    assert!(
        !dir_names(&root.join("snapshots"))
            .iter()
            .any(|n| n.starts_with("tmp-") || *n == orphan)
    );
    assert!(!dir_names(&root.join("content/blobs/sha256")).contains(&orphan));
    let again = t.resolve("keep").unwrap();
    assert_eq!(again.id, image.id);
    assert!(t.lower_dirs(&again).unwrap()[0].join("bin/tool").is_file());
}

#[test]
fn snapshots_sync_after_commit_and_a_torn_one_is_unpacked_again() {
    let mut t = TestStore::new();
    let image = t
        .import(&mut &layer()[..], &[], Some("keep"), None)
        .unwrap();
    let fs = t.lower_dirs(&image).unwrap()[0].clone();
    let snapshot = fs.parent().unwrap().to_path_buf();
    t.wait_synced();
    assert!(
        !snapshot.join("unsynced").exists(),
        "the sync never settled"
    );
    // What a power loss before the sync could leave: a marker from another boot, a lost file.
    std::fs::write(snapshot.join("unsynced"), "another-boot").unwrap();
    std::fs::remove_file(fs.join("bin/tool")).unwrap();
    t.reopen();
    let again = t.resolve("keep").unwrap();
    assert_eq!(again.id, image.id);
    let fs = &t.lower_dirs(&again).unwrap()[0];
    assert_eq!(
        std::fs::read(fs.join("bin/tool")).unwrap(),
        b"second version wins"
    );
    t.wait_synced();
    assert!(!snapshot.join("unsynced").exists());
    // A marker of this boot is trusted: the kernel still holds what was written.
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    std::fs::write(snapshot.join("unsynced"), boot.trim()).unwrap();
    std::fs::write(fs.join("bin/extra"), b"kept").unwrap();
    t.reopen();
    let fs = &t.lower_dirs(&t.resolve("keep").unwrap()).unwrap()[0];
    assert!(fs.join("bin/extra").is_file());
    t.wait_synced();
    assert!(!snapshot.join("unsynced").exists());
}

#[test]
fn import_refuses_bad_changes_and_references_before_reading() {
    let t = TestStore::new();
    let before = t.state();
    let mut never = FailingReader;
    let err = t
        .import(&mut never, &["FROM x".to_string()], None, None)
        .unwrap_err();
    assert_eq!(err.to_string(), "FROM is not a valid change command");
    assert_eq!(err.kind(), ErrorKind::Invalid);
    let err = t.import(&mut never, &[], Some("UPPER"), None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    let garbage = b"this is not a tar archive at all, just some words".repeat(20);
    let err = t.import(&mut &garbage[..], &[], None, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert_eq!(t.state(), before);
}

struct FailingReader;

impl std::io::Read for FailingReader {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        panic!("the input must not be read");
    }
}

#[test]
fn busybox_image_mounts_as_overlay() {
    let Some(tar) = busybox_tar() else {
        return;
    };
    let t = TestStore::new();
    let image = t
        .import(
            &mut std::fs::File::open(tar).unwrap(),
            &[r#"CMD ["sh"]"#.to_string()],
            Some("busybox:latest"),
            None,
        )
        .unwrap();
    let lowers = t.lower_dirs(&image).unwrap();
    let c = t.base.path().join("container");
    let (upper, work, merged) = (c.join("rw"), c.join("work"), c.join("merged"));
    for d in [&upper, &work, &merged] {
        std::fs::create_dir_all(d).unwrap();
    }
    wharf_engine::snapshot::mount_overlay(&lowers, &upper, &work, &merged).unwrap();
    let busybox = std::fs::metadata(merged.join("bin/busybox"));
    let sh = std::fs::read_link(merged.join("bin/sh"));
    let index = std::fs::read_to_string(merged.join("var/www/index.html"));
    std::fs::write(merged.join("tmp/written"), b"x").unwrap();
    wharf_engine::snapshot::unmount(&merged).unwrap();
    assert!(busybox.unwrap().permissions().mode() & 0o111 != 0);
    assert_eq!(sh.unwrap().to_str(), Some("/bin/busybox"));
    assert_eq!(index.unwrap(), "hello from wharf\n");
    assert!(upper.join("tmp/written").is_file());
    assert!(!lowers[0].join("tmp/written").exists());
    assert_eq!(image.config.cmd, Some(vec!["sh".to_string()]));
}

fn archive_names(data: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(data);
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn member(data: &[u8], name: &str) -> Vec<u8> {
    let mut a = tar::Archive::new(data);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some(name) {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut out).unwrap();
            return out;
        }
    }
    panic!("{name} not in archive");
}
