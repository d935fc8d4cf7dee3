//! The json-file log, as Docker writes it: one JSON object per line,
//! `{"log":"hi\n","stream":"stdout","time":"2024-01-01T00:00:00.123456789Z"}`.
//! Output is cut at newlines; a line longer than [`MAX_LINE`] is written in pieces without
//! the trailing newline (Docker's partial messages).

use std::fs::File;
use std::io::Write;

pub(crate) const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// The stream byte of Docker's multiplexed attach frames.
    pub(crate) fn frame_byte(self) -> u8 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }
}

pub(crate) struct JsonLog {
    file: Option<File>,
    partial: [Vec<u8>; 2],
}

impl JsonLog {
    pub(crate) fn new(file: Option<File>) -> JsonLog {
        JsonLog {
            file,
            partial: [Vec::new(), Vec::new()],
        }
    }

    /// Logs a chunk of output; complete lines are written now, the rest waits for more.
    pub(crate) fn write(&mut self, stream: Stream, mut data: &[u8]) {
        let idx = stream as usize;
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    self.partial[idx].extend_from_slice(&data[..=nl]);
                    data = &data[nl + 1..];
                    self.emit(stream);
                }
                None => {
                    let room = MAX_LINE - self.partial[idx].len();
                    let take = room.min(data.len());
                    self.partial[idx].extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.partial[idx].len() >= MAX_LINE {
                        self.emit(stream);
                    }
                }
            }
        }
    }

    /// Writes whatever is pending (the output ended without a newline).
    pub(crate) fn flush(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            if !self.partial[stream as usize].is_empty() {
                self.emit(stream);
            }
        }
    }

    fn emit(&mut self, stream: Stream) {
        let buf = std::mem::take(&mut self.partial[stream as usize]);
        if let Some(f) = self.file.as_mut() {
            let line = entry(stream, &buf, &now());
            // A full disk must not stop the container; the entry is lost, as with Docker.
            let _ = f.write_all(line.as_bytes());
        }
        // Keep the allocation for the next line, but never a large one.
        let mut buf = buf;
        buf.clear();
        if buf.capacity() <= 4096 {
            self.partial[stream as usize] = buf;
        }
    }
}

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// One log line. Invalid UTF-8 becomes U+FFFD, as Go's JSON encoder does.
pub(crate) fn entry(stream: Stream, data: &[u8], time: &str) -> String {
    let text = String::from_utf8_lossy(data);
    let log = serde_json::to_string(&*text).unwrap_or_else(|_| "\"\"".into());
    format!(
        "{{\"log\":{log},\"stream\":\"{}\",\"time\":\"{time}\"}}\n",
        stream.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn entries_are_docker_json_file_lines() {
        let e = entry(
            Stream::Stdout,
            b"hi \"there\"\n",
            "2024-01-01T00:00:00.000000001Z",
        );
        assert_eq!(
            e,
            "{\"log\":\"hi \\\"there\\\"\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-01T00:00:00.000000001Z\"}\n"
        );
        let e = entry(Stream::Stderr, b"\xff\n", "t");
        assert!(e.contains("\"log\":\"\u{fffd}\\n\""), "{e}");
        assert!(now().ends_with('Z'));
    }

    #[test]
    fn lines_are_split_and_partials_flushed() {
        let path = std::env::temp_dir().join(format!("wharf-log-test-{}", std::process::id()));
        let file = File::create(&path).unwrap();
        let mut log = JsonLog::new(Some(file));
        log.write(Stream::Stdout, b"a\nb");
        log.write(Stream::Stderr, b"err\n");
        log.write(Stream::Stdout, b"c\nd");
        log.write(Stream::Stdout, &vec![b'x'; MAX_LINE + 1]);
        log.flush();
        let lines = read_lines(&path);
        std::fs::remove_file(&path).unwrap();
        let logs: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| (l["stream"].as_str().unwrap(), l["log"].as_str().unwrap()))
            .collect();
        assert_eq!(logs[0], ("stdout", "a\n"));
        assert_eq!(logs[1], ("stderr", "err\n"));
        assert_eq!(logs[2], ("stdout", "bc\n"));
        assert_eq!(logs[3].1.len(), MAX_LINE);
        assert!(logs[3].1.starts_with('d'));
        assert_eq!(logs[4], ("stdout", "xx"));
        assert_eq!(logs.len(), 5);
    }
}
