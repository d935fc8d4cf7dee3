//! The data of a blob in ingest, written around the page cache where the file system allows.
//!
//! On the VMs wharf is measured on, every new page-cache page costs ~17 µs of host faults, so
//! putting a 170 MB layer blob through the page cache costs most of a second of CPU on the
//! thread that also inflates it, and then writeback. Whole 1 MiB pieces are instead handed
//! to a thread of their own that writes them with `O_DIRECT` from a few recycled, aligned
//! buffers. A direct write waits for the disk, which can be busy for seconds with other
//! writeback: when that thread falls behind (every buffer in flight), the piece goes through
//! the page cache from the calling thread, so a slow disk never holds up a download. The last
//! partial piece always goes through the page cache (direct writes need aligned lengths).
//! Small blobs never start the thread.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

/// Size of a piece; a multiple of any block size direct I/O asks to be aligned to.
pub(super) const PIECE: usize = 1 << 20;
/// Alignment of buffers, offsets and lengths of direct writes.
const ALIGN: usize = 4096;
/// Buffers one blob uses at most: the one being filled and those queued or being written.
const POOL: usize = 6;

/// A `PIECE`-sized buffer whose start is `ALIGN`-aligned in memory.
struct Buf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl Buf {
    fn new() -> Buf {
        let mem = vec![0u8; PIECE + ALIGN];
        let start = mem.as_ptr().align_offset(ALIGN);
        Buf { mem, start, len: 0 }
    }

    fn filled(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }

    /// Copies what fits of `data`; returns how much did.
    fn fill(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(PIECE - self.len);
        let at = self.start + self.len;
        self.mem[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }
}

enum Mode {
    /// No whole piece yet.
    Untried,
    Direct(Direct),
    /// The file system refused direct I/O, or its thread stopped.
    Buffered,
}

struct Direct {
    tx: SyncSender<(Buf, u64)>,
    back: Receiver<Buf>,
    thread: JoinHandle<io::Result<()>>,
}

/// Writes a blob's bytes in order, in whole pieces.
pub(super) struct Writer {
    file: Arc<File>,
    path: std::path::PathBuf,
    mode: Mode,
    buf: Buf,
    /// File offset of `buf`'s first byte.
    offset: u64,
    free: Vec<Buf>,
    made: usize,
}

impl Writer {
    pub(super) fn new(file: File, path: &Path) -> Writer {
        Writer {
            file: Arc::new(file),
            path: path.to_path_buf(),
            mode: Mode::Untried,
            buf: Buf::new(),
            offset: 0,
            free: Vec::new(),
            made: 1,
        }
    }

    pub(super) fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.buf.fill(data);
            data = &data[n..];
            if self.buf.len == PIECE {
                self.piece_full()?;
            }
        }
        Ok(())
    }

    /// Hands the full buffer to the direct writer, or writes it through the page cache.
    fn piece_full(&mut self) -> io::Result<()> {
        let offset = self.offset;
        self.offset += PIECE as u64;
        if matches!(self.mode, Mode::Untried) {
            self.mode = self.start();
        }
        if let Mode::Direct(d) = &self.mode {
            self.free.extend(d.back.try_iter());
            let next = self.free.pop().or_else(|| {
                (self.made < POOL).then(|| {
                    self.made += 1;
                    Buf::new()
                })
            });
            if let Some(next) = next {
                let full = std::mem::replace(&mut self.buf, next);
                match d.tx.try_send((full, offset)) {
                    Ok(()) => return Ok(()),
                    Err(TrySendError::Full((full, _)) | TrySendError::Disconnected((full, _))) => {
                        self.file.write_all_at(full.filled(), offset)?;
                        self.free.push(Buf { len: 0, ..full });
                        return Ok(());
                    }
                }
            }
        }
        self.file.write_all_at(self.buf.filled(), offset)?;
        self.buf.len = 0;
        Ok(())
    }

    /// Opens the file again for direct I/O and starts its writer thread.
    fn start(&self) -> Mode {
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(&self.path);
        let Ok(direct) = direct else {
            return Mode::Buffered;
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Buf, u64)>(POOL);
        let (back_tx, back) = std::sync::mpsc::sync_channel::<Buf>(POOL);
        let buffered = self.file.clone();
        let thread = std::thread::Builder::new()
            .name("ingest-direct".into())
            .spawn(move || {
                let mut direct = Some(direct);
                for (mut buf, offset) in rx {
                    let written = match &direct {
                        Some(d) => match d.write_all_at(buf.filled(), offset) {
                            // A file system that takes O_DIRECT at open but not these
                            // writes: the page cache from here on.
                            Err(e)
                                if e.raw_os_error()
                                    == Some(rustix::io::Errno::INVAL.raw_os_error()) =>
                            {
                                direct = None;
                                buffered.write_all_at(buf.filled(), offset)
                            }
                            r => r,
                        },
                        None => buffered.write_all_at(buf.filled(), offset),
                    };
                    written?;
                    buf.len = 0;
                    let _ = back_tx.try_send(buf);
                }
                Ok(())
            });
        match thread {
            Ok(thread) => Mode::Direct(Direct { tx, back, thread }),
            Err(_) => Mode::Buffered,
        }
    }

    /// Writes the rest, waits for the direct writes, and syncs the file; returns it with
    /// the number of bytes written.
    pub(super) fn finish(mut self) -> io::Result<(Arc<File>, u64)> {
        let tail = self.buf.filled();
        self.file.write_all_at(tail, self.offset)?;
        let size = self.offset + tail.len() as u64;
        if let Mode::Direct(d) = std::mem::replace(&mut self.mode, Mode::Buffered) {
            drop(d.tx);
            d.thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("direct writer panicked")))?;
        }
        self.file.sync_all()?;
        Ok((self.file, size))
    }
}
