//! Layer unpack: a (compressed) layer tar into a snapshot directory, in overlay form.
//!
//! Every file is created relative to a directory fd with `O_NOFOLLOW`, and parent directories
//! are opened with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (or a component walk that never
//! follows a symlink), so no entry can reach outside the snapshot. Entries that try to (`..`,
//! absolute names, escaping links, writes through symlinks, device nodes) refuse the whole
//! layer; the caller discards the half-unpacked directory.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{
    AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;
use tar::EntryType;

use super::ImageError;
use crate::content::{Digest, HashingReader};
use sha2::{Digest as _, Sha256};

/// What unpacking one layer found.
#[derive(Debug)]
pub(crate) struct Unpacked {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Bytes of regular file content written.
    pub size: u64,
}

/// The compression of a layer stream, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub(crate) fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The OCI layer media type for a blob of this compression.
    pub(crate) fn oci_layer_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

fn io_ctx(context: &str) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        context: context.to_string(),
        source,
    }
}

/// Unpacks the layer stream `raw` (plain, gzip or zstd tar) into the empty directory `dest`.
/// `raw` is read to its end, so a caller hashing it sees every byte.
pub(crate) fn unpack(raw: &mut dyn Read, dest: &Path) -> Result<Unpacked, ImageError> {
    let mut buffered = BufReader::with_capacity(256 * 1024, raw);
    let head = buffered
        .fill_buf()
        .map_err(io_ctx("reading layer"))?
        .to_vec();
    let unpacked = match Compression::detect(&head) {
        Compression::None => extract(&mut buffered, dest)?,
        compression => {
            let decoder: Box<dyn Read + '_> = match compression {
                Compression::Zstd => Box::new(
                    zstd::stream::read::Decoder::with_buffer(&mut buffered)
                        .map_err(io_ctx("starting zstd decoder"))?,
                ),
                _ => Box::new(flate2::bufread::MultiGzDecoder::new(&mut buffered)),
            };
            decompress_beside(decoder, dest)?
        }
    };
    io::copy(&mut buffered, &mut io::sink()).map_err(io_ctx("reading layer"))?;
    Ok(unpacked)
}

/// Hashes the tar stream `tar` (the diff id) while extracting it into `dest`.
fn extract(tar: &mut dyn Read, dest: &Path) -> Result<Unpacked, ImageError> {
    let mut hashing = HashingReader::new(tar);
    let size = extract_files(&mut hashing, dest)?;
    let (diff_id, _) = hashing
        .finish()
        .map_err(|e| ImageError::BadArchive(format!("layer stream: {e}")))?;
    Ok(Unpacked { diff_id, size })
}

/// Extracts the tar stream `tar` into `dest`; returns the bytes of file content written.
/// Small files are created here and written (content, owner, mode, times) on a second
/// thread: the kernel's work of filling new page cache pages is as large as that of
/// creating the files, and on two cores the two overlap.
fn extract_files(tar: &mut dyn Read, dest: &Path) -> Result<u64, ImageError> {
    let mut archive = tar::Archive::new(PadAtEof::new(tar));
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(2);
    let (back_tx, back_rx) = std::sync::mpsc::sync_channel::<Batch>(BATCHES);
    let rootless = !rustix::process::geteuid().is_root();
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || write_batches(rx, back_tx, rootless));
        let run = Extractor::new(
            dest,
            Writer {
                tx,
                back: back_rx,
                batch: Batch::new(),
                made: 1,
            },
        )
        .and_then(|mut x| {
            x.run(&mut archive)?;
            x.writer.send()?;
            Ok(x.size)
        });
        // The writer's error, if it had one, is why handing it files failed.
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(ImageError::BadArchive("layer writer panicked".into())));
        written.and(run)
    })
}

/// How many batches of small files exist at once (filled, queued, being written).
const BATCHES: usize = 3;
/// Content of files up to this size goes into a batch; larger ones are written directly.
const BATCH_BYTES: usize = 1 << 20;
/// Each queued file holds an open fd: a layer of tiny files must not approach a daemon's
/// soft fd limit (1024 under systemd's default), with several layers unpacking at once.
const BATCH_FILES: usize = 64;

/// Created files whose content and metadata the writer thread is to apply.
struct Batch {
    data: Aligned,
    used: usize,
    files: Vec<Queued>,
    /// Whether the file system took the last direct write (see `write_at`).
    direct: bool,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            data: Aligned::new(BATCH_BYTES),
            used: 0,
            files: Vec::with_capacity(BATCH_FILES),
            direct: true,
        }
    }
}

/// Files with at least this much content are written around the page cache. On the VMs
/// wharf is measured on, each new page-cache page costs ~17 µs of host faults; a direct
/// write of 64 KiB takes ~0.15 ms on their disks, less than its 16 new pages would. Most
/// of a layer's bytes are in such files, most of its files are smaller.
const DIRECT_MIN: usize = 64 << 10;
/// Alignment of direct writes: memory, file offset and length.
const ALIGN: usize = 4096;

/// A zeroed buffer of `len` bytes whose start is `ALIGN`-aligned in memory.
struct Aligned {
    mem: Vec<u8>,
    base: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let mem = vec![0u8; len + ALIGN];
        let base = mem.as_ptr().align_offset(ALIGN);
        Aligned { mem, base }
    }

    fn get(&self, r: std::ops::Range<usize>) -> &[u8] {
        &self.mem[self.base + r.start..self.base + r.end]
    }

    fn get_mut(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        &mut self.mem[self.base + r.start..self.base + r.end]
    }
}

/// Writes `data` at `offset` of `file`, both `ALIGN`-aligned: its whole blocks with
/// `O_DIRECT` when `*direct` and it is at least `DIRECT_MIN` long, the rest through the page
/// cache. A file system that refuses direct I/O clears `*direct` (and gets everything through
/// the page cache from then on). The file is left without `O_DIRECT`.
fn write_at(file: &File, data: &[u8], offset: u64, direct: &mut bool) -> io::Result<()> {
    let whole = data.len() / ALIGN * ALIGN;
    if *direct && data.len() >= DIRECT_MIN {
        match rustix::fs::fcntl_setfl(file, OFlags::DIRECT) {
            Ok(()) => {
                let written = file.write_all_at(&data[..whole], offset);
                rustix::fs::fcntl_setfl(file, OFlags::empty())?;
                match written {
                    Ok(()) => return file.write_all_at(&data[whole..], offset + whole as u64),
                    Err(e) if e.raw_os_error() != Some(Errno::INVAL.raw_os_error()) => {
                        return Err(e);
                    }
                    Err(_) => *direct = false,
                }
            }
            Err(_) => *direct = false,
        }
    }
    file.write_all_at(data, offset)
}

struct Queued {
    file: File,
    path: Vec<u8>,
    content: std::ops::Range<usize>,
    meta: Meta,
    mtime: u64,
}

/// What the extractor hands batches through; spent batches come back to be filled again.
struct Writer {
    tx: std::sync::mpsc::SyncSender<Batch>,
    back: std::sync::mpsc::Receiver<Batch>,
    batch: Batch,
    made: usize,
}

impl Writer {
    /// Hands the current batch to the writer thread.
    fn send(&mut self) -> Result<(), ImageError> {
        if self.batch.files.is_empty() {
            return Ok(());
        }
        let stopped = || ImageError::BadArchive("the layer writer stopped".into());
        let next = match self.back.try_recv() {
            Ok(b) => b,
            Err(_) if self.made < BATCHES => {
                self.made += 1;
                Batch::new()
            }
            Err(_) => self.back.recv().map_err(|_| stopped())?,
        };
        let full = std::mem::replace(&mut self.batch, next);
        self.tx.send(full).map_err(|_| stopped())
    }
}

/// The writer thread: each queued file's content, owner, mode, xattrs and times, then its
/// fd is closed.
fn write_batches(
    rx: std::sync::mpsc::Receiver<Batch>,
    back: std::sync::mpsc::SyncSender<Batch>,
    rootless: bool,
) -> Result<(), ImageError> {
    for mut batch in rx {
        for q in batch.files.drain(..) {
            let done = (|| {
                write_at(
                    &q.file,
                    batch.data.get(q.content.clone()),
                    0,
                    &mut batch.direct,
                )
                .map_err(io_ctx("writing file"))?;
                apply_meta(&q.file, &q.meta, rootless)?;
                rustix::fs::futimens(&q.file, &times(q.mtime))
                    .map_err(|e| io_ctx("setting file times")(e.into()))
            })();
            done.map_err(|e| match e {
                ImageError::Io { context, source } => ImageError::Io {
                    context: format!(
                        "unpacking {:?}: {context}",
                        String::from_utf8_lossy(&q.path)
                    ),
                    source,
                },
                e => e,
            })?;
        }
        batch.used = 0;
        let _ = back.try_send(batch);
    }
    Ok(())
}

/// Owner, mode and xattrs to apply to a file or directory (`None`: already right).
struct Meta {
    owner: Option<(Option<Uid>, Option<Gid>)>,
    mode: Option<u32>,
    xattrs: Xattrs,
}

/// Applies `meta` through the fd. The mode comes after the owner because chown clears
/// setuid and setgid.
fn apply_meta(fd: impl AsFd, meta: &Meta, rootless: bool) -> Result<(), ImageError> {
    if let Some((uid, gid)) = meta.owner {
        match rustix::fs::fchown(&fd, uid, gid) {
            Ok(()) => {}
            // Without root the files stay ours, as with rootless unpackers.
            Err(Errno::PERM) if rootless => {}
            Err(e) => return Err(io_ctx("setting owner")(e.into())),
        }
    }
    if let Some(mode) = meta.mode {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
            .map_err(|e| io_ctx("setting mode")(e.into()))?;
    }
    for (name, value) in &meta.xattrs {
        rustix::fs::fsetxattr(&fd, name.as_slice(), value, XattrFlags::empty())
            .map_err(|e| io_ctx("setting xattr")(e.into()))?;
    }
    Ok(())
}

/// Decompressed bytes handed from the decompressing thread to the extracting one.
const CHUNK: usize = 1 << 20;

/// Decompression on this thread, the diff id's hashing on a second, extraction on a third
/// (which hands file content to a fourth): creating tens of thousands of files costs the
/// kernel as much as inflating and hashing them costs us, so a pull or load of a large layer
/// keeps both cores busy, and no one thread's share sets the pace.
fn decompress_beside(mut decoder: Box<dyn Read + '_>, dest: &Path) -> Result<Unpacked, ImageError> {
    let (tx, hash_rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
    let (hash_tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
    // Spent chunks come back to be filled again: a fresh megabyte per chunk is zeroed first.
    // (At most 11 exist: 4 + 4 queued and one in each thread.)
    let (back_tx, back_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(12);
    let (size, hasher) = std::thread::scope(|scope| {
        // The diff id is hashed on a thread of its own between the two: inflating is the
        // longest job of a pull, and the hash is a third of it.
        let hashing = scope.spawn(move || {
            let mut hasher = Sha256::new();
            for chunk in hash_rx {
                if let Ok(c) = &chunk {
                    hasher.update(c);
                }
                if hash_tx.send(chunk).is_err() {
                    break;
                }
            }
            hasher
        });
        let extractor = scope.spawn(move || {
            let mut chunks = ChunkReader {
                rx,
                back: back_tx,
                chunk: Vec::new(),
                pos: 0,
            };
            let size = extract_files(&mut chunks, dest)?;
            // The rest of the stream still counts for the diff id, which the hashing thread
            // computes from what it passes on here.
            io::copy(&mut chunks, &mut io::sink())
                .map_err(|e| ImageError::BadArchive(format!("layer stream: {e}")))?;
            Ok(size)
        });
        loop {
            let mut chunk = back_rx.try_recv().unwrap_or_default();
            chunk.resize(CHUNK, 0);
            let mut filled = 0;
            let read = loop {
                match decoder.read(&mut chunk[filled..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        filled += n;
                        if filled == CHUNK {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            chunk.truncate(filled);
            let end = filled < CHUNK;
            let sent = match read {
                // An error must reach the extractor as one: a stream that just stopped would
                // look like a complete (padded) tar.
                Err(e) => {
                    let _ = tx.send(Err(e));
                    break;
                }
                Ok(()) if filled > 0 => tx.send(Ok(chunk)).is_ok(),
                Ok(()) => true,
            };
            // A failed send means the extractor stopped (it has the error to report).
            if !sent || end {
                break;
            }
        }
        drop(tx);
        let hasher = hashing
            .join()
            .map_err(|_| ImageError::BadArchive("layer hashing panicked".into()));
        let size = extractor
            .join()
            .unwrap_or_else(|_| Err(ImageError::BadArchive("layer extraction panicked".into())));
        Ok::<_, ImageError>((size?, hasher?))
    })?;
    Ok(Unpacked {
        diff_id: Digest::from_hasher(hasher),
        size,
    })
}

/// Reads the chunks the decompressing thread sends; its errors become read errors.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    back: std::sync::mpsc::SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    let spent = std::mem::replace(&mut self.chunk, c);
                    if spent.capacity() > 0 {
                        let _ = self.back.try_send(spent);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Ends a stream the way a complete tar ends: padding to the block and two zero blocks.
/// Some writers (umoci 0.4) stop right after the last file's data; Go's reader, and so
/// Docker, accept that, and the diff id (hashed before this) covers only the real bytes.
struct PadAtEof<R> {
    inner: R,
    count: u64,
    pad: Option<u64>,
}

impl<R: Read> PadAtEof<R> {
    fn new(inner: R) -> Self {
        PadAtEof {
            inner,
            count: 0,
            pad: None,
        }
    }
}

impl<R: Read> Read for PadAtEof<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pad.is_none() {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() {
                self.count += n as u64;
                return Ok(n);
            }
            self.pad = Some((512 - self.count % 512) % 512 + 1024);
        }
        let left = self.pad.unwrap_or(0);
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        buf[..n].fill(0);
        self.pad = Some(left - n as u64);
        Ok(n)
    }
}

fn hostile(path: &[u8], what: &str) -> ImageError {
    ImageError::HostileLayer(format!("entry {:?} {what}", String::from_utf8_lossy(path)))
}

/// Splits an entry name into its components: `.` and empty parts dropped; absolute names and
/// `..` refused.
fn components<'a>(path: &'a [u8], what: &str) -> Result<Vec<&'a [u8]>, ImageError> {
    if path.first() == Some(&b'/') {
        return Err(hostile(path, &format!("has an absolute {what}")));
    }
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(hostile(
                    path,
                    &format!("has a \"..\" component in its {what}"),
                ));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

/// File content is written in pieces of this size (most files in one write): a write that
/// covers only part of a new block makes the kernel zero the rest of it first.
const PIECE: usize = 1 << 20;

struct Extractor {
    root: Rc<OwnedFd>,
    /// The parent directory of the previous entry: most entries share their parent.
    cached: Option<(Vec<u8>, Rc<OwnedFd>)>,
    /// One piece of file content on its way to the file (allocated and zeroed once).
    piece: Option<Aligned>,
    /// Whether the file system takes direct writes (see `write_at`).
    direct: bool,
    /// The process's umask, when known: a file whose mode it leaves whole is created with
    /// that mode (no chmod after).
    umask: Option<u32>,
    /// Who creates the files: a file to be owned by them needs no chown, unless it lands in
    /// a setgid directory (it then takes the directory's group).
    creator: (u32, u32),
    setgid_dirs: bool,
    writer: Writer,
    /// Directory mtimes, set at the end since creating children changes them.
    dir_times: Vec<(Vec<u8>, u64)>,
    size: u64,
    is_root: bool,
    has_openat2: bool,
}

fn errno_io(e: Errno) -> io::Error {
    e.into()
}

impl Extractor {
    fn new(dest: &Path, writer: Writer) -> Result<Extractor, ImageError> {
        let root = rustix::fs::open(
            dest,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_ctx("opening snapshot directory")(e.into()))?;
        let setgid_root = rustix::fs::fstat(&root)
            .map(|st| st.st_mode & 0o2000 != 0)
            .unwrap_or(true);
        Ok(Extractor {
            root: Rc::new(root),
            cached: None,
            piece: None,
            direct: true,
            umask: process_umask(),
            creator: (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            ),
            setgid_dirs: setgid_root,
            writer,
            dir_times: Vec::new(),
            size: 0,
            is_root: rustix::process::geteuid().is_root(),
            has_openat2: true,
        })
    }

    fn run<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<(), ImageError> {
        let entries = archive
            .entries()
            .map_err(|e| ImageError::BadArchive(format!("layer tar: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| ImageError::BadArchive(format!("layer tar: {e}")))?;
            let path = entry.path_bytes().into_owned();
            self.entry(&mut entry, &path).map_err(|e| match e {
                ImageError::Io { context, source } => ImageError::Io {
                    context: format!("unpacking {:?}: {context}", String::from_utf8_lossy(&path)),
                    source,
                },
                e => e,
            })?;
        }
        self.finish_dirs();
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &[u8],
    ) -> Result<(), ImageError> {
        let comps = components(path, "name")?;
        let Some((&name, parent)) = comps.split_last() else {
            // The layer root itself: the snapshot directory keeps its own metadata.
            return Ok(());
        };
        let etype = entry.header().entry_type();

        if let Some(target) = name.strip_prefix(b".wh.") {
            if name == b".wh..wh..opq" {
                let dir = self.parent(parent, path)?;
                return rustix::fs::fsetxattr(
                    &dir,
                    "trusted.overlay.opaque",
                    b"y",
                    XattrFlags::empty(),
                )
                .map_err(|e| io_ctx("marking directory opaque")(e.into()));
            }
            if target.starts_with(b".wh.") {
                // aufs bookkeeping (.wh..wh.plnk and the like), meaningless for overlay.
                return Ok(());
            }
            if target.is_empty() || target == b"." || target == b".." {
                return Err(hostile(path, "is a whiteout of \".\" or \"..\""));
            }
            let dir = self.parent(parent, path)?;
            return self
                .replacing(&dir, target, || whiteout(&dir, target))?
                .map_err(|e| io_ctx("creating whiteout")(e.into()));
        }

        match etype {
            EntryType::Directory => {
                let dir = self.parent(parent, path)?;
                let mkdir = || rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700));
                match mkdir() {
                    Ok(()) => {}
                    // A directory entry over an existing directory merges into it.
                    Err(Errno::EXIST) if self.clear(&dir, name, true)? => {}
                    Err(Errno::EXIST) => {
                        mkdir().map_err(|e| io_ctx("creating directory")(e.into()))?;
                    }
                    Err(e) => return Err(io_ctx("creating directory")(e.into())),
                }
                if entry.header().mode().unwrap_or(0) & 0o2000 != 0 {
                    self.setgid_dirs = true;
                }
                let fd = rustix::fs::openat(
                    &dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io_ctx("opening directory")(e.into()))?;
                self.set_meta_fd(&fd, entry, false)?;
                let mtime = entry.header().mtime().unwrap_or(0);
                self.dir_times.push((join(&comps), mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let dir = self.parent(parent, path)?;
                let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
                // setuid and setgid bits are set after the owner (chown clears them).
                let final_mode = self.umask.is_some_and(|u| mode & (u | 0o7000) == 0);
                let create = || {
                    rustix::fs::openat(
                        &dir,
                        name,
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(if final_mode { mode } else { 0o600 }),
                    )
                };
                let fd = self
                    .replacing(&dir, name, create)?
                    .map_err(|e| io_ctx("creating file")(e.into()))?;
                let mut file = File::from(fd);
                let mtime = entry.header().mtime().unwrap_or(0);
                let size = entry.size();
                if etype != EntryType::GNUSparse && size <= BATCH_BYTES as u64 {
                    let meta = self.meta(entry, final_mode)?;
                    self.queue(file, path, entry, size as usize, meta, mtime)?;
                    self.size += size;
                    return Ok(());
                }
                self.size += self.write_content(entry, &mut file)?;
                self.set_meta_fd(file.as_fd(), entry, final_mode)?;
                rustix::fs::futimens(&file, &times(mtime))
                    .map_err(|e| io_ctx("setting file times")(e.into()))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| hostile(path, "is a symlink without a target"))?
                    .into_owned();
                check_symlink(path, parent.len(), &target)?;
                let dir = self.parent(parent, path)?;
                self.replacing(&dir, name, || {
                    rustix::fs::symlinkat(target.as_slice(), &dir, name)
                })?
                .map_err(|e| io_ctx("creating symlink")(e.into()))?;
                self.set_meta_at(&dir, name, entry)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| hostile(path, "is a hardlink without a target"))?
                    .into_owned();
                let tcomps = components(&target, "hardlink target")?;
                let Some((&tname, tparent)) = tcomps.split_last() else {
                    return Err(hostile(path, "is a hardlink to the layer root"));
                };
                if tcomps == comps {
                    return Ok(());
                }
                let tdir = self.open_dir(tparent, &target, false)?;
                let dir = self.parent(parent, path)?;
                self.replacing(&dir, name, || {
                    rustix::fs::linkat(&tdir, tname, &dir, name, AtFlags::empty())
                })?
                .map_err(|e| {
                    if e == Errno::NOENT {
                        hostile(path, "is a hardlink to a file not in this layer")
                    } else {
                        io_ctx("creating hardlink")(e.into())
                    }
                })?;
            }
            EntryType::Char | EntryType::Block => {
                let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                if etype == EntryType::Char && major == 0 && minor == 0 {
                    let dir = self.parent(parent, path)?;
                    return self
                        .replacing(&dir, name, || whiteout(&dir, name))?
                        .map_err(|e| io_ctx("creating whiteout")(e.into()));
                }
                if comps.first() == Some(&&b"dev"[..]) {
                    // /dev of a container is its own tmpfs: device nodes a rootfs carries
                    // there are never seen, and creating them would need privileges we
                    // do not want a layer to use.
                    return Ok(());
                }
                return Err(hostile(path, "is a device node"));
            }
            EntryType::Fifo => {
                let dir = self.parent(parent, path)?;
                self.replacing(&dir, name, || {
                    rustix::fs::mknodat(&dir, name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                })?
                .map_err(|e| io_ctx("creating fifo")(e.into()))?;
                self.set_meta_at(&dir, name, entry)?;
            }
            // Other types (global PAX headers, volume labels) carry no file.
            _ => {}
        }
        Ok(())
    }

    /// Runs `make`, which creates `name` in `dir`; when something is in the way, removes it
    /// and runs `make` again. Most entries land where nothing is, so nothing is looked up
    /// before.
    fn replacing<T>(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        make: impl Fn() -> Result<T, Errno>,
    ) -> Result<Result<T, Errno>, ImageError> {
        match make() {
            Err(Errno::EXIST) => {
                self.clear(dir, name, false)?;
                Ok(make())
            }
            made => Ok(made),
        }
    }

    /// Reads the entry's content into the current batch and queues the file for the writer.
    fn queue<R: Read>(
        &mut self,
        file: File,
        path: &[u8],
        entry: &mut tar::Entry<'_, R>,
        size: usize,
        meta: Meta,
        mtime: u64,
    ) -> Result<(), ImageError> {
        let w = &mut self.writer;
        // Content to be written directly starts on an aligned address.
        let align = |used: usize| match size >= DIRECT_MIN {
            true => used.next_multiple_of(ALIGN),
            false => used,
        };
        if align(w.batch.used) + size > BATCH_BYTES || w.batch.files.len() == BATCH_FILES {
            w.send()?;
        }
        let start = align(w.batch.used);
        entry
            .read_exact(w.batch.data.get_mut(start..start + size))
            .map_err(|e| ImageError::BadArchive(format!("layer tar: {e}")))?;
        w.batch.used = start + size;
        w.batch.files.push(Queued {
            file,
            path: path.to_vec(),
            content: start..start + size,
            meta,
            mtime,
        });
        Ok(())
    }

    /// Writes the entry's content into `file`, a piece at a time.
    fn write_content<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        file: &mut File,
    ) -> Result<u64, ImageError> {
        let piece = self.piece.get_or_insert_with(|| Aligned::new(PIECE));
        let mut total = 0u64;
        loop {
            let mut filled = 0;
            while filled < PIECE {
                match entry.read(piece.get_mut(filled..PIECE)) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(ImageError::BadArchive(format!("layer tar: {e}"))),
                }
            }
            if filled == 0 {
                return Ok(total);
            }
            write_at(file, piece.get(0..filled), total, &mut self.direct)
                .map_err(io_ctx("writing file"))?;
            total += filled as u64;
            if filled < PIECE {
                return Ok(total);
            }
        }
    }

    /// Removes whatever is at `dir/name` so a new entry can take its place. A directory is
    /// kept when `keep_dir` (a directory entry over an existing directory merges); returns
    /// whether one was kept.
    fn clear(&mut self, dir: &OwnedFd, name: &[u8], keep_dir: bool) -> Result<bool, ImageError> {
        let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(io_ctx("inspecting existing entry")(e.into())),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            if keep_dir {
                return Ok(true);
            }
            self.cached = None;
            // The magic link names the directory itself, not a path that could be swapped.
            let path = Path::new("/proc/self/fd")
                .join(dir.as_raw_fd().to_string())
                .join(std::ffi::OsStr::from_bytes(name));
            std::fs::remove_dir_all(&path).map_err(io_ctx("replacing directory"))?;
        } else {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())
                .map_err(|e| io_ctx("replacing entry")(e.into()))?;
        }
        Ok(false)
    }

    /// The parent directory of an entry, created (0755) where the layer omits it.
    fn parent(&mut self, comps: &[&[u8]], entry: &[u8]) -> Result<Rc<OwnedFd>, ImageError> {
        let key = join(comps);
        if let Some((k, fd)) = &self.cached
            && *k == key
        {
            return Ok(fd.clone());
        }
        let fd = self.open_dir(comps, entry, true)?;
        self.cached = Some((key, fd.clone()));
        Ok(fd)
    }

    /// Opens the directory `comps` under the root without following any symlink.
    fn open_dir(
        &mut self,
        comps: &[&[u8]],
        entry: &[u8],
        create: bool,
    ) -> Result<Rc<OwnedFd>, ImageError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if comps.is_empty() {
            return Ok(self.root.clone());
        }
        if self.has_openat2 {
            match rustix::fs::openat2(
                &self.root,
                join(comps).as_slice(),
                flags,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            ) {
                Ok(fd) => return Ok(Rc::new(fd)),
                Err(Errno::NOSYS) => self.has_openat2 = false,
                // The walk below says precisely what is wrong, or creates what is missing.
                Err(_) => {}
            }
        }
        let mut cur = self.root.clone();
        for &c in comps {
            let next = match rustix::fs::openat(&*cur, c, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    rustix::fs::mkdirat(&*cur, c, Mode::from_raw_mode(0o755))
                        .map_err(|e| io_ctx("creating parent directory")(e.into()))?;
                    rustix::fs::openat(&*cur, c, flags, Mode::empty())
                        .map_err(|e| io_ctx("opening parent directory")(e.into()))?
                }
                Err(Errno::NOENT) => {
                    return Err(hostile(entry, "names a file not in this layer"));
                }
                Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                    let st = rustix::fs::statat(&*cur, c, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| io_ctx("inspecting parent directory")(e.into()))?;
                    return Err(
                        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                            hostile(entry, "goes through a symlink")
                        } else {
                            ImageError::BadArchive(format!(
                                "entry {:?}: a parent is not a directory",
                                String::from_utf8_lossy(entry)
                            ))
                        },
                    );
                }
                Err(e) => return Err(io_ctx("opening parent directory")(errno_io(e))),
            };
            cur = Rc::new(next);
        }
        Ok(cur)
    }

    fn owner<R: Read>(&self, entry: &tar::Entry<'_, R>) -> (Option<Uid>, Option<Gid>) {
        let h = entry.header();
        let uid = h
            .uid()
            .ok()
            .and_then(|u| u32::try_from(u).ok())
            .filter(|&u| u != u32::MAX);
        let gid = h
            .gid()
            .ok()
            .and_then(|g| u32::try_from(g).ok())
            .filter(|&g| g != u32::MAX);
        (
            uid.map(Uid::from_raw_unchecked),
            gid.map(Gid::from_raw_unchecked),
        )
    }

    /// Whether a new file already has the owner `owner` asks for: made by that user and
    /// group, in no setgid directory.
    fn owned_as(&self, (uid, gid): (Option<Uid>, Option<Gid>)) -> bool {
        !self.setgid_dirs
            && uid.is_none_or(|u| u.as_raw() == self.creator.0)
            && gid.is_none_or(|g| g.as_raw() == self.creator.1)
    }

    /// What a new file or directory needs of the entry's owner, mode (unless `mode_set`:
    /// it was created with it) and xattrs.
    fn meta<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        mode_set: bool,
    ) -> Result<Meta, ImageError> {
        let owner = self.owner(entry);
        Ok(Meta {
            owner: (!self.owned_as(owner)).then_some(owner),
            mode: (!mode_set).then(|| entry.header().mode().unwrap_or(0o644) & 0o7777),
            xattrs: xattrs(entry)?,
        })
    }

    /// Owner, mode and xattrs of a file or directory, through its fd.
    fn set_meta_fd<R: Read>(
        &self,
        fd: impl AsFd,
        entry: &mut tar::Entry<'_, R>,
        mode_set: bool,
    ) -> Result<(), ImageError> {
        apply_meta(fd, &self.meta(entry, mode_set)?, !self.is_root)
    }

    /// Owner and times of a symlink or fifo, by name in its directory, never following it.
    fn set_meta_at<R: Read>(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        entry: &tar::Entry<'_, R>,
    ) -> Result<(), ImageError> {
        let (uid, gid) = self.owner(entry);
        if !self.owned_as((uid, gid)) {
            match rustix::fs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(()) => {}
                Err(Errno::PERM) if !self.is_root => {}
                Err(e) => return Err(io_ctx("setting owner")(e.into())),
            }
        }
        if entry.header().entry_type() == EntryType::Fifo {
            let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(mode), AtFlags::empty())
                .map_err(|e| io_ctx("setting mode")(e.into()))?;
        }
        let mtime = entry.header().mtime().unwrap_or(0);
        rustix::fs::utimensat(dir, name, &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_ctx("setting times")(e.into()))
    }

    /// Directory mtimes, last: best effort, since a later entry may have replaced a parent.
    fn finish_dirs(&mut self) {
        let dirs = std::mem::take(&mut self.dir_times);
        for (path, mtime) in dirs.iter().rev() {
            let comps: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
            let Some((&name, parent)) = comps.split_last() else {
                continue;
            };
            if let Ok(dir) = self.open_dir(parent, path, false) {
                let _ =
                    rustix::fs::utimensat(&dir, name, &times(*mtime), AtFlags::SYMLINK_NOFOLLOW);
            }
        }
    }
}

/// A whiteout: overlay's 0:0 character device.
fn whiteout(dir: &OwnedFd, name: &[u8]) -> Result<(), Errno> {
    rustix::fs::mknodat(
        dir,
        name,
        FileType::CharacterDevice,
        Mode::empty(),
        rustix::fs::makedev(0, 0),
    )
}

/// The umask, from /proc (reading it with umask(2) means setting it, for every thread).
fn process_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

fn times(mtime: u64) -> Timestamps {
    let t = Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(0),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// The xattrs a tar entry carries in PAX records. `trusted.*` are refused as data: in overlay
/// form they would be read as overlay's own metadata.
/// Extended attributes as (name, value).
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

fn xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Xattrs, ImageError> {
    let mut out = Vec::new();
    let Some(exts) = entry
        .pax_extensions()
        .map_err(|e| ImageError::BadArchive(format!("layer tar: {e}")))?
    else {
        return Ok(out);
    };
    for ext in exts {
        let ext = ext.map_err(|e| ImageError::BadArchive(format!("layer tar: {e}")))?;
        if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.")
            && !name.starts_with(b"trusted.")
        {
            out.push((name.to_vec(), ext.value_bytes().to_vec()));
        }
    }
    Ok(out)
}

/// Refuses a relative symlink target that climbs above the layer root from where the link
/// sits (`depth` directories below the root). Absolute targets resolve inside the container.
fn check_symlink(path: &[u8], depth: usize, target: &[u8]) -> Result<(), ImageError> {
    if target.first() == Some(&b'/') {
        return Ok(());
    }
    let mut d = depth as i64;
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                d -= 1;
                if d < 0 {
                    return Err(hostile(path, "is a symlink that escapes the layer root"));
                }
            }
            _ => d += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn layer(files: usize, size: usize) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..files {
            let data: Vec<u8> = (0..size).map(|j| ((i * 31 + j * 7) % 251) as u8).collect();
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(EntryType::Regular);
            b.append_data(&mut h, format!("f{i}"), data.as_slice())
                .unwrap();
        }
        b.into_inner().unwrap()
    }

    fn compress(data: &[u8], zstd: bool) -> Vec<u8> {
        if zstd {
            return zstd::bulk::compress(data, 3).unwrap();
        }
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn append(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: EntryType, mode: u32, data: &[u8]) {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(1_600_000_000);
        b.append_data(&mut h, path, data).unwrap();
    }

    #[test]
    fn later_entries_replace_earlier_ones_of_any_kind() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mut b = tar::Builder::new(Vec::new());
        append(&mut b, "x", EntryType::Regular, 0o644, b"file first");
        append(&mut b, "x/", EntryType::Directory, 0o750, b"");
        append(&mut b, "x/y", EntryType::Regular, 0o640, b"inside");
        append(&mut b, "d/", EntryType::Directory, 0o755, b"");
        append(&mut b, "d/f", EntryType::Regular, 0o644, b"gone with d");
        append(&mut b, "d", EntryType::Regular, 0o600, b"d is a file now");
        append(&mut b, "s", EntryType::Regular, 0o644, b"");
        append(
            &mut b,
            "big",
            EntryType::Regular,
            0o755,
            &vec![7u8; PIECE * 2 + 5],
        );
        let tar = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let u = unpack(&mut compress(&tar, false).as_slice(), dir.path()).unwrap();
        assert_eq!(u.diff_id, Digest::of(&tar));
        let x = std::fs::metadata(dir.path().join("x")).unwrap();
        assert!(x.is_dir());
        assert_eq!(x.permissions().mode() & 0o7777, 0o750);
        assert_eq!(x.mtime(), 1_600_000_000);
        let y = std::fs::metadata(dir.path().join("x/y")).unwrap();
        assert_eq!(y.permissions().mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read(dir.path().join("x/y")).unwrap(), b"inside");
        let d = std::fs::metadata(dir.path().join("d")).unwrap();
        assert!(d.is_file());
        assert_eq!(d.permissions().mode() & 0o7777, 0o600);
        assert_eq!(std::fs::read(dir.path().join("s")).unwrap(), b"");
        let big = std::fs::read(dir.path().join("big")).unwrap();
        assert_eq!(big.len(), PIECE * 2 + 5);
        assert!(big.iter().all(|&b| b == 7));
        let meta = std::fs::metadata(dir.path().join("big")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
        assert_eq!(meta.mtime(), 1_600_000_000);
        assert_eq!(u.size, (10 + 6 + 11 + 15 + PIECE * 2 + 5) as u64);
    }

    #[test]
    fn files_written_around_the_page_cache_keep_every_byte() {
        // Sizes around the direct-write threshold, the block size and the piece size, mixed
        // with small files so that large ones start at odd places in a batch.
        let sizes = [
            200,
            DIRECT_MIN - 1,
            DIRECT_MIN,
            DIRECT_MIN + 1,
            3,
            ALIGN * 40,
            ALIGN * 40 + 7,
            300_001,
            BATCH_BYTES,
            BATCH_BYTES + 1,
            PIECE * 3,
            PIECE * 2 + DIRECT_MIN + 5,
            PIECE + 100,
            5000,
        ];
        let content = |i: usize, n: usize| -> Vec<u8> {
            (0..n)
                .map(|j| ((i * 131 + j * 17 + j / 4096) % 253) as u8)
                .collect()
        };
        let mut b = tar::Builder::new(Vec::new());
        for (i, &n) in sizes.iter().enumerate() {
            append(
                &mut b,
                &format!("f{i}"),
                EntryType::Regular,
                0o644,
                &content(i, n),
            );
        }
        let tar = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let u = unpack(&mut compress(&tar, false).as_slice(), dir.path()).unwrap();
        assert_eq!(u.diff_id, Digest::of(&tar));
        assert_eq!(u.size, sizes.iter().sum::<usize>() as u64);
        for (i, &n) in sizes.iter().enumerate() {
            let got = std::fs::read(dir.path().join(format!("f{i}"))).unwrap();
            assert!(got == content(i, n), "f{i} ({n} bytes) differs");
        }
    }

    #[test]
    fn many_tiny_files_fill_several_batches() {
        use std::os::unix::fs::MetadataExt;
        let mut b = tar::Builder::new(Vec::new());
        let n = BATCH_FILES * BATCHES * 2 + 3;
        for i in 0..n {
            append(
                &mut b,
                &format!("t/{i}"),
                EntryType::Regular,
                0o644,
                &[i as u8; 3],
            );
        }
        let tar = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let u = unpack(&mut compress(&tar, true).as_slice(), dir.path()).unwrap();
        assert_eq!(u.size, 3 * n as u64);
        for i in [0, BATCH_FILES, n - 1] {
            let p = dir.path().join(format!("t/{i}"));
            assert_eq!(std::fs::read(&p).unwrap(), [i as u8; 3]);
            assert_eq!(std::fs::metadata(&p).unwrap().mtime(), 1_600_000_000);
        }
        assert_eq!(std::fs::read_dir(dir.path().join("t")).unwrap().count(), n);
    }

    #[test]
    fn compressed_layers_unpack_across_threads_and_damage_is_an_error() {
        // Several chunks of decompressed data, so both threads take turns.
        let tar = layer(12, 300_000);
        for zstd in [false, true] {
            let packed = compress(&tar, zstd);
            let dir = tempfile::tempdir().unwrap();
            let u = unpack(&mut packed.as_slice(), dir.path()).unwrap();
            assert_eq!(u.diff_id, Digest::of(&tar));
            assert_eq!(u.size, 12 * 300_000);
            assert_eq!(
                std::fs::read(dir.path().join("f11")).unwrap().len(),
                300_000
            );

            // A stream cut short fails; it is not taken for a complete (padded) tar.
            let cut = &packed[..packed.len() / 2];
            let dir = tempfile::tempdir().unwrap();
            assert!(unpack(&mut &cut[..], dir.path()).is_err(), "zstd={zstd}");
        }
    }
}
