#![allow(dead_code)]
//! Helpers for the image store tests: stores on temporary roots and hand-made tars.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wharf_engine::image::ImageStore;
use wharf_engine::meta::Meta;

pub struct TestStore {
    pub base: tempfile::TempDir,
    store: Option<ImageStore>,
}

impl std::ops::Deref for TestStore {
    type Target = ImageStore;
    fn deref(&self) -> &ImageStore {
        self.store.as_ref().unwrap()
    }
}

impl TestStore {
    pub fn new() -> TestStore {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let store = Some(open(&root));
        TestStore { base, store }
    }

    pub fn root(&self) -> PathBuf {
        self.base.path().join("root")
    }

    /// Reopens the store on the same root, as a restarted daemon would.
    pub fn reopen(&mut self) {
        // The old store (and its lock on the database) goes before the new one opens.
        self.store = None;
        self.store = Some(open(&self.root()));
    }

    /// Everything that must not change when a bad input is refused.
    pub fn state(&self) -> (Vec<String>, Vec<String>, Vec<String>, Vec<String>) {
        let mut ids: Vec<String> = self
            .list()
            .unwrap()
            .into_iter()
            .map(|i| format!("{} {:?}", i.id, i.repo_tags))
            .collect();
        ids.sort();
        let root = self.root();
        (
            ids,
            dir_names(&root.join("snapshots")),
            dir_names(&root.join("content/blobs/sha256")),
            dir_names(&root.join("content/ingest")),
        )
    }
}

pub fn open(root: &Path) -> ImageStore {
    let meta = Arc::new(Meta::open(&root.join("meta.redb")).unwrap());
    ImageStore::open(root, meta).unwrap()
}

pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// A tar written header by header, so names the tar crate's builder would refuse (`..`,
/// absolute) can be made.
pub struct RawTar {
    builder: tar::Builder<Vec<u8>>,
}

impl RawTar {
    pub fn new() -> RawTar {
        RawTar {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        let name = path.as_bytes();
        assert!(name.len() < 100, "keep test names short");
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    }

    fn link_header(path: &str, kind: tar::EntryType, target: &str) -> tar::Header {
        let mut h = Self::header(path, kind, 0o777, 0);
        let t = target.as_bytes();
        assert!(t.len() < 100);
        h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
        h
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = Self::header(path, tar::EntryType::Directory, mode, 0);
        h.set_cksum();
        self.builder.append(&h, std::io::empty()).unwrap();
        self
    }

    pub fn file(mut self, path: &str, data: &[u8]) -> Self {
        self = self.file_owned(path, data, 0o644, 0, 0);
        self
    }

    pub fn file_owned(mut self, path: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = Self::header(path, tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::link_header(path, tar::EntryType::Symlink, target);
        h.set_cksum();
        self.builder.append(&h, std::io::empty()).unwrap();
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::link_header(path, tar::EntryType::Link, target);
        h.set_cksum();
        self.builder.append(&h, std::io::empty()).unwrap();
        self
    }

    pub fn device(mut self, path: &str, kind: tar::EntryType, major: u32, minor: u32) -> Self {
        let mut h = Self::header(path, kind, 0o666, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.builder.append(&h, std::io::empty()).unwrap();
        self
    }

    pub fn fifo(mut self, path: &str) -> Self {
        let mut h = Self::header(path, tar::EntryType::Fifo, 0o640, 0);
        h.set_cksum();
        self.builder.append(&h, std::io::empty()).unwrap();
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// The busybox rootfs tar of scripts/mkbusybox.sh, made once (a build artefact kept in the
/// target dir, like the e2e harness's).
pub fn busybox_tar() -> Option<PathBuf> {
    static TAR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    TAR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let out = dir.join("engine-busybox-rootfs.tar");
        if out.is_file() {
            return Some(out);
        }
        // Another test binary may be making it too: write under our own name, then rename.
        let mine = dir.join(format!("engine-busybox-{}.tar", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/mkbusybox.sh");
        let ok = std::process::Command::new(script)
            .arg(&mine)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok && std::fs::rename(&mine, &out).is_ok() {
            Some(out)
        } else {
            let _ = std::fs::remove_file(&mine);
            eprintln!(
                "skipping busybox parts: scripts/mkbusybox.sh failed (busybox-static missing?)"
            );
            None
        }
    })
    .clone()
}

/// A docker-archive (the pre-25 `docker save` layout) of uncompressed `layers`; returns the
/// archive and the image id.
pub fn docker_archive(layers: &[Vec<u8>], tag: Option<&str>) -> (Vec<u8>, String) {
    use wharf_engine::content::Digest;
    let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
    let history: Vec<serde_json::Value> = layers
        .iter()
        .enumerate()
        .map(|(i, _)| serde_json::json!({"created": "2024-01-02T03:04:05Z", "created_by": format!("layer {i}")}))
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-02T03:04:05.123456789Z",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"], "Labels": {"a": "b"}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }))
    .unwrap();
    let id = Digest::of(&config);
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).unwrap();
    };
    let mut layer_paths = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let p = format!("l{i}/layer.tar");
        add(&p, l);
        layer_paths.push(p);
    }
    add(&format!("{}.json", id.hex()), &config);
    let manifest = serde_json::json!([{
        "Config": format!("{}.json", id.hex()),
        "RepoTags": tag.map(|t| vec![t]).unwrap_or_default(),
        "Layers": layer_paths,
    }]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    (b.into_inner().unwrap(), id.to_string())
}
