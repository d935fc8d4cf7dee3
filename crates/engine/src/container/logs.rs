//! `logs`: the json-file log the shim writes, filtered and framed as Docker sends it.

use std::io::SeekFrom;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};
use tokio::sync::mpsc;

use super::ContainerError;
use crate::Engine;

#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub stdout: bool,
    pub stderr: bool,
    pub follow: bool,
    /// Only the last `tail` lines; `None` for all.
    pub tail: Option<usize>,
    pub timestamps: bool,
    /// Unix seconds (fractional allowed); 0 for no bound.
    pub since: f64,
    pub until: f64,
}

#[derive(Deserialize)]
struct Line {
    log: String,
    stream: String,
    time: String,
}

/// Frames one chunk of output: raw with a tty, else Docker's 8-byte header + payload.
pub fn frame(stream: u8, payload: &[u8], tty: bool) -> Bytes {
    if tty {
        return Bytes::copy_from_slice(payload);
    }
    let mut out = Vec::with_capacity(8 + payload.len());
    out.push(stream);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

fn timestamp_seconds(ts: &str) -> f64 {
    chrono::DateTime::parse_from_rfc3339(ts)
        .map(|t| t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9)
        .unwrap_or(0.0)
}

impl LogOptions {
    /// The frame for one log line, or None when the options filter it out.
    fn render(&self, raw: &str, tty: bool) -> Option<Bytes> {
        let line: Line = serde_json::from_str(raw).ok()?;
        let stream = match line.stream.as_str() {
            "stdout" if self.stdout => 1,
            "stderr" if self.stderr => 2,
            _ => return None,
        };
        if self.since > 0.0 || self.until > 0.0 {
            let t = timestamp_seconds(&line.time);
            if (self.since > 0.0 && t < self.since) || (self.until > 0.0 && t > self.until) {
                return None;
            }
        }
        if self.timestamps {
            Some(frame(
                stream,
                format!("{} {}", line.time, line.log).as_bytes(),
                tty,
            ))
        } else {
            Some(frame(stream, line.log.as_bytes(), tty))
        }
    }
}

impl Engine {
    /// Streams the container's log; returns whether it has a tty (raw stream) and the chunks.
    pub async fn logs(
        self: &Arc<Self>,
        key: &str,
        opts: LogOptions,
    ) -> Result<(bool, mpsc::Receiver<Bytes>), ContainerError> {
        let c = self.registry().lookup(key)?;
        let (tty, id) = {
            let r = c.record();
            (r.tty(), r.id.clone())
        };
        let path = self.container_paths(&id).log();
        let (tx, rx) = mpsc::channel(64);
        let content = match tokio::fs::read_to_string(&path).await {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        let mut lifecycle = c.lifecycle.subscribe();
        tokio::spawn(async move {
            let lines: Vec<&str> = content.lines().collect();
            let skip = opts.tail.map_or(0, |n| lines.len().saturating_sub(n));
            for raw in &lines[skip..] {
                if let Some(b) = opts.render(raw, tty)
                    && tx.send(b).await.is_err()
                {
                    return;
                }
            }
            if !opts.follow {
                return;
            }
            // Follow: read what is appended until the container stops running.
            let Ok(file) = tokio::fs::File::open(&path).await else {
                return;
            };
            let mut reader = BufReader::new(file);
            if reader
                .seek(SeekFrom::Start(content.len() as u64))
                .await
                .is_err()
            {
                return;
            }
            let mut buf = String::new();
            let mut last_pass = false;
            loop {
                buf.clear();
                match reader.read_line(&mut buf).await {
                    Ok(n) if n > 0 && buf.ends_with('\n') => {
                        if let Some(b) = opts.render(buf.trim_end(), tty)
                            && tx.send(b).await.is_err()
                        {
                            return;
                        }
                    }
                    Ok(n) => {
                        // A partial line: rewind and wait for the rest.
                        if n > 0 && reader.seek(SeekFrom::Current(-(n as i64))).await.is_err() {
                            return;
                        }
                        // Once stopped, the log is complete: read it to the end once more.
                        if last_pass {
                            return;
                        }
                        if !c.record().state.status.is_running() {
                            last_pass = true;
                            continue;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                            _ = lifecycle.changed() => {}
                            _ = tx.closed() => return,
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        Ok((tty, rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_filters() {
        let opts = LogOptions {
            stdout: true,
            stderr: false,
            ..Default::default()
        };
        let out = r#"{"log":"hi\n","stream":"stdout","time":"2026-01-01T00:00:00.5Z"}"#;
        let err = r#"{"log":"oops\n","stream":"stderr","time":"2026-01-01T00:00:01Z"}"#;
        assert_eq!(
            &opts.render(out, false).unwrap()[..],
            b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n"
        );
        assert!(opts.render(err, false).is_none());
        let ts = LogOptions {
            stdout: true,
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            &ts.render(out, true).unwrap()[..],
            b"2026-01-01T00:00:00.5Z hi\n"
        );
        let since = LogOptions {
            stdout: true,
            stderr: true,
            since: 1767225600.7,
            ..Default::default()
        };
        assert!(since.render(out, true).is_none());
        assert!(since.render(err, true).is_some());
    }
}
