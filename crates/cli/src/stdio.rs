//! The local end of attached streams: Docker's 8-byte multiplexed frames, copying stdin to a
//! hijacked connection (with the ctrl-p ctrl-q detach sequence), raw terminal mode and sizes.

use std::io::Write;
use std::os::fd::AsFd;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("reading the container's output")]
    Read(#[source] std::io::Error),
    #[error("writing the container's output")]
    Write(#[source] std::io::Error),
    #[error("sending input to the container")]
    Input(#[source] std::io::Error),
    #[error("setting the terminal to raw mode")]
    Raw(#[source] std::io::Error),
}

/// Splits Docker's multiplexed stream: frames of `[stream, 0, 0, 0, len (u32 BE)]` + payload.
#[derive(Default)]
pub struct Demux {
    header: Vec<u8>,
    stream: u8,
    remaining: usize,
}

impl Demux {
    /// Feeds bytes; calls `out(stream, payload)` for every piece of payload found.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        out: &mut dyn FnMut(u8, &[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        while !data.is_empty() {
            if self.remaining == 0 {
                let need = 8 - self.header.len();
                let take = need.min(data.len());
                self.header.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.header.len() == 8 {
                    self.stream = self.header[0];
                    self.remaining = u32::from_be_bytes([
                        self.header[4],
                        self.header[5],
                        self.header[6],
                        self.header[7],
                    ]) as usize;
                    self.header.clear();
                }
                continue;
            }
            let take = self.remaining.min(data.len());
            out(self.stream, &data[..take])?;
            self.remaining -= take;
            data = &data[take..];
        }
        Ok(())
    }
}

/// Writes container output to our stdout/stderr, raw (tty) or demultiplexed.
pub struct OutputSink {
    demux: Option<Demux>,
}

impl OutputSink {
    pub fn new(tty: bool) -> OutputSink {
        OutputSink {
            demux: if tty { None } else { Some(Demux::default()) },
        }
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), StdioError> {
        match &mut self.demux {
            None => write_to(1, data),
            Some(d) => d.feed(data, &mut |stream, payload| {
                write_to(if stream == 2 { 2 } else { 1 }, payload)
            }),
        }
        .map_err(StdioError::Write)
    }
}

/// Writes to stdout; when the reader has gone away, exits as a SIGPIPE would (status 141).
pub fn write_stdout(data: &[u8]) {
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_all(data).and_then(|_| o.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(141);
    }
}

fn write_to(fd: u8, data: &[u8]) -> std::io::Result<()> {
    if fd == 2 {
        let mut e = std::io::stderr().lock();
        match e.write_all(data).and_then(|_| e.flush()) {
            Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(err),
            _ => Ok(()),
        }
    } else {
        write_stdout(data);
        Ok(())
    }
}

/// Copies a reader (the hijacked connection or a log body) to stdout/stderr until EOF.
pub async fn pump_output<R: AsyncRead + Unpin>(
    mut reader: R,
    first: Bytes,
    tty: bool,
) -> Result<(), StdioError> {
    let mut sink = OutputSink::new(tty);
    if !first.is_empty() {
        sink.write(&first)?;
    }
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(StdioError::Read(e)),
        };
        if n == 0 {
            return Ok(());
        }
        sink.write(&buf[..n])?;
    }
}

/// Reads our stdin on a thread of its own (a blocking read cannot be cancelled; the thread
/// simply dies with the process). `None` marks EOF.
pub fn stdin_reader() -> mpsc::Receiver<Option<Bytes>> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        let mut stdin = std::io::stdin().lock();
        loop {
            match std::io::Read::read(&mut stdin, &mut buf) {
                Ok(0) => {
                    let _ = tx.blocking_send(None);
                    return;
                }
                Ok(n) => {
                    if tx
                        .blocking_send(Some(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    let _ = tx.blocking_send(None);
                    return;
                }
            }
        }
    });
    rx
}

/// Watches input for the detach sequence (ctrl-p ctrl-q). A held-back ctrl-p is released
/// when the next byte is not ctrl-q, as docker does.
pub struct DetachScanner {
    keys: Vec<u8>,
    matched: usize,
}

pub enum Scan {
    Forward(Vec<u8>),
    Detach(Vec<u8>),
}

impl DetachScanner {
    pub fn new(keys: Vec<u8>) -> DetachScanner {
        DetachScanner { keys, matched: 0 }
    }

    pub fn scan(&mut self, data: &[u8]) -> Scan {
        let mut out = Vec::with_capacity(data.len());
        for &b in data {
            if self.keys.is_empty() {
                out.push(b);
                continue;
            }
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return Scan::Detach(out);
                }
                continue;
            }
            out.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if b == self.keys[0] {
                self.matched = 1;
            } else {
                out.push(b);
            }
        }
        Scan::Forward(out)
    }
}

/// Parses docker's `--detach-keys` ("ctrl-p,ctrl-q", "a,ctrl-@").
pub fn parse_detach_keys(s: &str) -> Option<Vec<u8>> {
    let mut keys = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if let Some(c) = part.strip_prefix("ctrl-") {
            let c = c.as_bytes();
            if c.len() != 1 {
                return None;
            }
            let k = match c[0] {
                b'a'..=b'z' => c[0] - b'a' + 1,
                b'@' => 0,
                b'[' => 27,
                b'\\' => 28,
                b']' => 29,
                b'^' => 30,
                b'_' => 31,
                _ => return None,
            };
            keys.push(k);
        } else if part.len() == 1 {
            keys.push(part.as_bytes()[0]);
        } else {
            return None;
        }
    }
    Some(keys)
}

/// What ended the input side.
pub enum InputEnd {
    Eof,
    Detached,
}

/// Copies stdin to the connection; half-closes it at EOF so the container sees EOF too.
pub async fn pump_input<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::Receiver<Option<Bytes>>,
    detach: Option<Vec<u8>>,
) -> Result<InputEnd, StdioError> {
    let mut scanner = detach.map(DetachScanner::new);
    while let Some(Some(chunk)) = rx.recv().await {
        let (data, detached) = match &mut scanner {
            Some(s) => match s.scan(&chunk) {
                Scan::Forward(d) => (d, false),
                Scan::Detach(d) => (d, true),
            },
            None => (chunk.to_vec(), false),
        };
        if !data.is_empty() {
            writer.write_all(&data).await.map_err(StdioError::Input)?;
        }
        if detached {
            return Ok(InputEnd::Detached);
        }
    }
    writer.shutdown().await.map_err(StdioError::Input)?;
    Ok(InputEnd::Eof)
}

pub fn stdin_is_tty() -> bool {
    rustix::termios::isatty(std::io::stdin().as_fd())
}

pub fn stdout_is_tty() -> bool {
    rustix::termios::isatty(std::io::stdout().as_fd())
}

/// The terminal's size as (rows, columns), from stdout (or stdin when stdout is redirected).
pub fn term_size() -> Option<(u16, u16)> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdout().as_fd())
        .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdin().as_fd()))
        .ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Puts the stdin terminal in raw mode until dropped.
pub struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    pub fn enter() -> Result<RawMode, StdioError> {
        let fd = std::io::stdin();
        let saved =
            rustix::termios::tcgetattr(fd.as_fd()).map_err(|e| StdioError::Raw(e.into()))?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(fd.as_fd(), rustix::termios::OptionalActions::Now, &raw)
            .map_err(|e| StdioError::Raw(e.into()))?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin().as_fd(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![stream, 0, 0, 0];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn demux_across_chunk_boundaries() {
        let mut data = frame(1, b"hello ");
        data.extend(frame(2, b"oops"));
        data.extend(frame(1, b"world"));
        data.extend(frame(1, b""));
        for split in 0..data.len() {
            let mut d = Demux::default();
            let mut got: Vec<(u8, Vec<u8>)> = Vec::new();
            let mut out = |s: u8, p: &[u8]| {
                match got.last_mut() {
                    Some((ls, lp)) if *ls == s => lp.extend_from_slice(p),
                    _ => got.push((s, p.to_vec())),
                }
                Ok(())
            };
            d.feed(&data[..split], &mut out).unwrap();
            d.feed(&data[split..], &mut out).unwrap();
            assert_eq!(
                got,
                vec![
                    (1, b"hello ".to_vec()),
                    (2, b"oops".to_vec()),
                    (1, b"world".to_vec())
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn detach_sequence() {
        let keys = parse_detach_keys("ctrl-p,ctrl-q").unwrap();
        assert_eq!(keys, vec![16, 17]);
        let mut s = DetachScanner::new(keys.clone());
        assert!(matches!(s.scan(b"ab\x10"), Scan::Forward(d) if d == b"ab"));
        assert!(matches!(s.scan(b"x"), Scan::Forward(d) if d == b"\x10x"));
        assert!(matches!(s.scan(b"c\x10"), Scan::Forward(d) if d == b"c"));
        assert!(matches!(s.scan(b"\x11rest"), Scan::Detach(d) if d.is_empty()));
        let mut s = DetachScanner::new(keys);
        assert!(matches!(s.scan(b"\x10\x10\x11"), Scan::Detach(d) if d == b"\x10"));
        assert_eq!(parse_detach_keys("a,ctrl-@"), Some(vec![b'a', 0]));
        assert_eq!(parse_detach_keys("ctrl-xx"), None);
    }
}
