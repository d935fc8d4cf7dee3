//! What pushes remember: which registry repositories hold a blob (to mount it across
//! repositories), and which blob a layer compressed to (to skip compressing it again when
//! the registry has it). A cache: losing it costs time, never correctness.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Repositories remembered per blob: enough to find a mount source.
const MAX_SOURCES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CompressedBlob {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Data {
    /// blob digest -> `registry/repository` names known to hold it.
    #[serde(default)]
    sources: BTreeMap<String, Vec<String>>,
    /// `<diff id> <compression>` -> the blob that layer compressed to.
    #[serde(default)]
    compressed: BTreeMap<String, CompressedBlob>,
}

pub(crate) struct Metadata {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Metadata {
    pub fn open(dir: &Path) -> Metadata {
        Metadata {
            path: dir.join("metadata.json"),
            lock: Mutex::new(()),
        }
    }

    fn load(&self) -> Data {
        std::fs::read(&self.path)
            .ok()
            .and_then(|d| serde_json::from_slice(&d).ok())
            .unwrap_or_default()
    }

    fn save(&self, data: &Data) {
        let Ok(bytes) = serde_json::to_vec(data) else {
            return;
        };
        let tmp = self
            .path
            .with_extension(format!("tmp-{}", crate::content::random_name()));
        let ok = std::fs::File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(&bytes)?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if ok.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    fn update(&self, f: impl FnOnce(&mut Data)) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut data = self.load();
        f(&mut data);
        self.save(&data);
    }

    /// Notes that `repository` (`registry/path`) holds these blobs.
    pub fn add_sources(&self, repository: &str, digests: &[String]) {
        self.update(|data| {
            for d in digests {
                let list = data.sources.entry(d.clone()).or_default();
                list.retain(|r| r != repository);
                list.insert(0, repository.to_string());
                list.truncate(MAX_SOURCES);
            }
        });
    }

    /// Repositories on `registry` other than `except` known to hold `digest`.
    pub fn sources(&self, digest: &str, registry: &str, except: &str) -> Vec<String> {
        let prefix = format!("{registry}/");
        self.load()
            .sources
            .remove(digest)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r != except)
            .filter_map(|r| r.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    pub fn compressed(&self, diff_id: &str, compression: &str) -> Option<CompressedBlob> {
        self.load()
            .compressed
            .remove(&format!("{diff_id} {compression}"))
    }

    pub fn set_compressed(&self, diff_id: &str, compression: &str, blob: CompressedBlob) {
        self.update(|data| {
            data.compressed
                .insert(format!("{diff_id} {compression}"), blob);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_compressed_blobs_persist() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metadata::open(dir.path());
        m.add_sources("r:5000/a", &["sha256:1".into()]);
        m.add_sources("r:5000/b", &["sha256:1".into()]);
        m.add_sources("other/c", &["sha256:1".into()]);
        let m = Metadata::open(dir.path());
        assert_eq!(m.sources("sha256:1", "r:5000", "r:5000/b"), vec!["a"]);
        assert!(m.sources("sha256:2", "r:5000", "").is_empty());
        let blob = CompressedBlob {
            digest: "sha256:c".into(),
            size: 3,
            media_type: "t".into(),
        };
        m.set_compressed("sha256:d", "gzip", blob.clone());
        assert_eq!(m.compressed("sha256:d", "gzip"), Some(blob));
        assert_eq!(m.compressed("sha256:d", "zstd"), None);
    }
}
