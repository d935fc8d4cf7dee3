//! Layer tars written deterministically: entries sorted by path, headers normalised (GNU
//! format, no user or group names, no atime or ctime, device numbers zero), mtimes clamped
//! to `SOURCE_DATE_EPOCH` when it is set. The same files always make the same bytes.
//!
//! Two sources: a list of items (COPY/ADD), and an overlay upper directory (RUN, commit),
//! whose whiteouts (0:0 character devices) and opaque directories become `.wh.` entries.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// One entry of a COPY/ADD layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Relative to the image root, `/`-separated, no leading `/`.
    pub path: String,
    pub kind: ItemKind,
    /// Permission bits (with setuid/setgid/sticky).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKind {
    Dir,
    File(PathBuf),
    Bytes(Vec<u8>),
    Symlink(String),
}

fn clamp(mtime: i64, epoch: Option<i64>) -> u64 {
    let t = match epoch {
        Some(e) if mtime > e => e,
        _ => mtime,
    };
    t.max(0) as u64
}

fn header(
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode & 0o7777);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(mtime);
    h.set_size(size);
    h
}

/// Writes `items` (sorted here) as a tar to `out`.
pub fn write_items<W: Write>(items: &mut Vec<Item>, epoch: Option<i64>, out: W) -> io::Result<W> {
    // Of two items with one path the later wins: reversed, a stable sort keeps it first.
    items.reverse();
    items.sort_by(|a, b| a.path.cmp(&b.path));
    items.dedup_by(|b, a| a.path == b.path);
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    for it in items.iter() {
        let mtime = clamp(it.mtime, epoch);
        match &it.kind {
            ItemKind::Dir => {
                let mut h = header(tar::EntryType::Directory, it.mode, it.uid, it.gid, mtime, 0);
                tar.append_data(&mut h, format!("{}/", it.path), io::empty())?;
            }
            ItemKind::File(src) => {
                let f = File::open(src)?;
                let len = f.metadata()?.len();
                let mut h = header(tar::EntryType::Regular, it.mode, it.uid, it.gid, mtime, len);
                // A file that changes while it is read would desync the tar: read exactly len.
                tar.append_data(&mut h, &it.path, ExactReader::new(f, len))?;
            }
            ItemKind::Bytes(b) => {
                let mut h = header(
                    tar::EntryType::Regular,
                    it.mode,
                    it.uid,
                    it.gid,
                    mtime,
                    b.len() as u64,
                );
                tar.append_data(&mut h, &it.path, b.as_slice())?;
            }
            ItemKind::Symlink(target) => {
                let mut h = header(tar::EntryType::Symlink, it.mode, it.uid, it.gid, mtime, 0);
                tar.append_link(&mut h, &it.path, target)?;
            }
        }
    }
    tar.into_inner()
}

/// Reads exactly `len` bytes: a shorter file is padded with zeros, a longer one cut.
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> ExactReader<R> {
    fn new(inner: R, left: u64) -> Self {
        ExactReader { inner, left }
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let mut n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            buf[..want].fill(0);
            n = want;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    matches!(
        xattr::get(path, "trusted.overlay.opaque"),
        Ok(Some(v)) if v == b"y"
    )
}

/// Writes the overlay upper directory `upper` as a layer tar (whiteouts in the OCI form).
pub fn write_upper<W: Write>(upper: &Path, epoch: Option<i64>, out: W) -> io::Result<W> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    walk_upper(upper, "", epoch, &mut tar, &mut links)?;
    tar.into_inner()
}

fn walk_upper<W: Write>(
    dir: &Path,
    rel: &str,
    epoch: Option<i64>,
    tar: &mut tar::Builder<W>,
    links: &mut HashMap<(u64, u64), String>,
) -> io::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let Some(name) = name.to_str().map(str::to_string) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a file name is not UTF-8",
            ));
        };
        let path = dir.join(&name);
        let meta = std::fs::symlink_metadata(&path)?;
        let rel_path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let mtime = clamp(meta.mtime(), epoch);
        let ft = meta.file_type();
        if is_whiteout(&meta) {
            let wh = match rel_path.rsplit_once('/') {
                Some((parent, base)) => format!("{parent}/.wh.{base}"),
                None => format!(".wh.{rel_path}"),
            };
            let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, mtime, 0);
            tar.append_data(&mut h, wh, io::empty())?;
        } else if ft.is_dir() {
            let mut h = header(
                tar::EntryType::Directory,
                meta.mode(),
                meta.uid().into(),
                meta.gid().into(),
                mtime,
                0,
            );
            tar.append_data(&mut h, format!("{rel_path}/"), io::empty())?;
            if is_opaque(&path) {
                let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, mtime, 0);
                tar.append_data(&mut h, format!("{rel_path}/.wh..wh..opq"), io::empty())?;
            }
            walk_upper(&path, &rel_path, epoch, tar, links)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path)?;
            let mut h = header(
                tar::EntryType::Symlink,
                meta.mode(),
                meta.uid().into(),
                meta.gid().into(),
                mtime,
                0,
            );
            tar.append_link(&mut h, &rel_path, target)?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    let mut h = header(
                        tar::EntryType::Link,
                        meta.mode(),
                        meta.uid().into(),
                        meta.gid().into(),
                        mtime,
                        0,
                    );
                    tar.append_link(&mut h, &rel_path, first)?;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), rel_path.clone());
            }
            let f = File::open(&path)?;
            let mut h = header(
                tar::EntryType::Regular,
                meta.mode(),
                meta.uid().into(),
                meta.gid().into(),
                mtime,
                meta.len(),
            );
            tar.append_data(&mut h, &rel_path, ExactReader::new(f, meta.len()))?;
        } else if ft.is_fifo() {
            let mut h = header(
                tar::EntryType::Fifo,
                meta.mode(),
                meta.uid().into(),
                meta.gid().into(),
                mtime,
                0,
            );
            tar.append_data(&mut h, &rel_path, io::empty())?;
        }
        // Sockets and device nodes are not part of a layer (Docker drops sockets too).
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_make_the_same_bytes_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "hello").unwrap();
        let mk = || {
            vec![
                Item {
                    path: "b/f".into(),
                    kind: ItemKind::File(f.clone()),
                    mode: 0o644,
                    uid: 1,
                    gid: 2,
                    mtime: 2_000_000_000,
                },
                Item {
                    path: "b".into(),
                    kind: ItemKind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    mtime: 5,
                },
                Item {
                    path: "a".into(),
                    kind: ItemKind::Symlink("b/f".into()),
                    mode: 0o777,
                    uid: 0,
                    gid: 0,
                    mtime: 5,
                },
            ]
        };
        let mut one = mk();
        let mut two = mk();
        two.reverse();
        let a = write_items(&mut one, Some(10), Vec::new()).unwrap();
        let b = write_items(&mut two, Some(10), Vec::new()).unwrap();
        assert_eq!(a, b);
        let mut ar = tar::Archive::new(a.as_slice());
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            seen.push((
                e.path().unwrap().display().to_string(),
                h.mtime().unwrap(),
                h.uid().unwrap(),
            ));
        }
        assert_eq!(
            seen,
            vec![
                ("a".to_string(), 5, 0),
                ("b/".to_string(), 5, 0),
                ("b/f".to_string(), 10, 1)
            ]
        );
    }
}
