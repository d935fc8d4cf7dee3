//! Content-addressed blobs: blobs/sha256/<hex>, written to ingest/, verified, renamed.
//!
//! A blob is written to `ingest/<random>` while its digest is computed, fsynced, and becomes a
//! [`Staged`] blob. Only [`Staged::commit`] moves it into `blobs/`; dropping a staged blob
//! deletes it, so an operation that fails half-way leaves the store as it was.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

mod direct;

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    Mismatch { expected: Digest, actual: Digest },
    #[error("blob {0} not found")]
    Missing(Digest),
    #[error("content store {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContentError + '_ {
    move |source| ContentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A sha256 digest in its canonical text form, `sha256:<64 lowercase hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, ContentError> {
        match s.strip_prefix("sha256:") {
            Some(hex) if is_hex64(hex) => Ok(Digest(s.to_string())),
            _ => Err(ContentError::InvalidDigest(s.to_string())),
        }
    }

    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    pub fn from_hasher(h: Sha256) -> Digest {
        Digest(format!("sha256:{}", hex::encode(h.finalize())))
    }

    /// The 64 hex digits, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// True when `s` is 64 lowercase hex digits.
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A reader that hashes and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads the rest of the stream (so the digest covers all of it) and returns the digest
    /// and the byte count.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Digest::from_hasher(self.hasher), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

impl ContentStore {
    /// Opens (creating) `<dir>/blobs/sha256` and `<dir>/ingest`, removing what an interrupted
    /// write left in ingest.
    pub fn open(dir: &Path) -> Result<ContentStore, ContentError> {
        let blobs = dir.join("blobs").join("sha256");
        let ingest = dir.join("ingest");
        std::fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
        match std::fs::remove_dir_all(&ingest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&ingest)(e)),
        }
        std::fs::create_dir_all(&ingest).map_err(io_err(&ingest))?;
        Ok(ContentStore { blobs, ingest })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, ContentError> {
        File::open(self.path(digest)).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ContentError::Missing(digest.clone())
            } else {
                io_err(&self.path(digest))(e)
            }
        })
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, ContentError> {
        let mut data = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut data)
            .map_err(io_err(&self.path(digest)))?;
        Ok(data)
    }

    pub fn size(&self, digest: &Digest) -> Result<u64, ContentError> {
        let path = self.path(digest);
        std::fs::metadata(&path)
            .map(|m| m.len())
            .map_err(io_err(&path))
    }

    /// Deletes a blob; a missing blob is not an error.
    pub fn delete(&self, digest: &Digest) -> Result<(), ContentError> {
        let path = self.path(digest);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Every blob in the store.
    pub fn list(&self) -> Result<Vec<Digest>, ContentError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.blobs).map_err(io_err(&self.blobs))? {
            let entry = entry.map_err(io_err(&self.blobs))?;
            if let Some(name) = entry.file_name().to_str()
                && is_hex64(name)
            {
                out.push(Digest(format!("sha256:{name}")));
            }
        }
        Ok(out)
    }

    /// Starts writing a new blob into ingest.
    pub fn ingest(&self) -> Result<Ingest, ContentError> {
        let path = self.ingest.join(random_name());
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(Ingest {
            file: direct::Writer::new(file, &path),
            staged: Staged {
                path,
                digest: Digest(String::new()),
                size: 0,
                blobs: self.blobs.clone(),
            },
            hasher: Sha256::new(),
        })
    }

    /// Stages `data`, checking it against `expected` when given.
    pub fn stage_bytes(
        &self,
        data: &[u8],
        expected: Option<&Digest>,
    ) -> Result<Staged, ContentError> {
        let mut ingest = self.ingest()?;
        ingest.write_all(data).map_err(|e| ingest.io(e))?;
        ingest.finish(expected)
    }

    /// Stages everything `reader` yields.
    pub fn stage_reader(
        &self,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
    ) -> Result<Staged, ContentError> {
        let mut ingest = self.ingest()?;
        io::copy(reader, &mut ingest).map_err(|e| ingest.io(e))?;
        ingest.finish(expected)
    }

    /// A directory under ingest/ for scratch files of one operation; removed when dropped.
    pub fn scratch_dir(&self) -> Result<ScratchDir, ContentError> {
        let path = self.ingest.join(random_name());
        std::fs::create_dir(&path).map_err(io_err(&path))?;
        Ok(ScratchDir { path })
    }
}

/// A blob being written: hashed as it is written. Dropped unfinished, its file is deleted.
/// The bytes go out in whole pieces (`direct.rs`): a download arrives in pieces of a few
/// kilobytes, and each write that ends inside a new block makes the kernel zero the rest of
/// the block first.
pub struct Ingest {
    file: direct::Writer,
    staged: Staged,
    hasher: Sha256,
}

impl Ingest {
    fn io(&self, source: io::Error) -> ContentError {
        io_err(&self.staged.path)(source)
    }

    /// Flushes the blob to disk and checks its digest: the blob is now staged.
    pub fn finish(self, expected: Option<&Digest>) -> Result<Staged, ContentError> {
        let Ingest {
            file,
            mut staged,
            hasher,
        } = self;
        let (file, size) = file.finish().map_err(io_err(&staged.path))?;
        let actual = Digest::from_hasher(hasher);
        if let Some(expected) = expected
            && *expected != actual
        {
            return Err(ContentError::Mismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let on_disk = file.metadata().map_err(io_err(&staged.path))?.len();
        if on_disk != size {
            return Err(io_err(&staged.path)(io::Error::other(format!(
                "{on_disk} bytes on disk, {size} written"
            ))));
        }
        staged.size = size;
        staged.digest = actual;
        Ok(staged)
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_all(buf)?;
        self.hasher.update(buf);
        Ok(buf.len())
    }

    /// Nothing to do: the bytes reach the file in whole pieces, and all of them by `finish`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A verified blob in ingest/, not yet part of the store. Dropped without commit, it is deleted.
#[derive(Debug)]
pub struct Staged {
    path: PathBuf,
    digest: Digest,
    size: u64,
    blobs: PathBuf,
}

impl Staged {
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The staged file, to read it back before it is committed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the blob into the store; returns false when the store already had it.
    pub fn commit(self) -> Result<bool, ContentError> {
        let target = self.blobs.join(self.digest.hex());
        if target.is_file() {
            return Ok(false);
        }
        std::fs::rename(&self.path, &target).map_err(io_err(&target))?;
        if let Some(dir) = target.parent()
            && let Ok(d) = File::open(dir)
        {
            // Makes the rename itself durable; the blob is usable even if this fails.
            let _ = d.sync_all();
        }
        Ok(true)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // After a commit the path no longer exists; otherwise this discards the blob.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A scratch directory in ingest/, removed with its contents when dropped.
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// 16 random hex digits for temporary names.
pub fn random_name() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Only uniqueness matters here: the clock and pid are enough without entropy.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        bytes = (t ^ (u64::from(std::process::id()) << 40)).to_le_bytes();
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_blob_lands_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let staged = store.stage_bytes(b"hello", None).unwrap();
        let digest = staged.digest().clone();
        assert_eq!(
            digest.as_str(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(!store.contains(&digest));
        drop(staged);
        assert!(!store.contains(&digest));
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );

        let staged = store.stage_bytes(b"hello", Some(&digest)).unwrap();
        assert!(staged.commit().unwrap());
        assert_eq!(store.read_blob(&digest).unwrap(), b"hello");
        assert!(!store.stage_bytes(b"hello", None).unwrap().commit().unwrap());
        assert_eq!(store.list().unwrap(), vec![digest.clone()]);
        store.delete(&digest).unwrap();
        store.delete(&digest).unwrap();
        assert!(!store.contains(&digest));
    }

    #[test]
    fn large_blobs_with_odd_pieces_and_tails_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..direct::PIECE * 9 + 12_345)
            .map(|i| (i % 251) as u8 ^ (i / 7919) as u8)
            .collect();
        let mut ingest = store.ingest().unwrap();
        for (i, piece) in data.chunks(16_411).enumerate() {
            ingest.write_all(piece).unwrap();
            if i % 97 == 0 {
                ingest.flush().unwrap();
            }
        }
        let staged = ingest.finish(Some(&Digest::of(&data))).unwrap();
        assert_eq!(staged.size(), data.len() as u64);
        assert_eq!(std::fs::read(staged.path()).unwrap(), data);
    }

    #[test]
    fn wrong_digest_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let wrong = Digest::of(b"other");
        let err = store.stage_bytes(b"hello", Some(&wrong)).unwrap_err();
        assert!(err.to_string().starts_with("digest mismatch"), "{err}");
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn digest_parsing() {
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Digest::parse(&format!("sha512:{}", "a".repeat(64))).is_err());
        assert_eq!(
            Digest::parse(&format!("sha256:{}", "a".repeat(64)))
                .unwrap()
                .hex(),
            "a".repeat(64)
        );
    }
}
