//! The daemon's JSON message streams (pull, push, import, load) as the user sees them:
//! per-layer bars with size, speed and ETA on a terminal, docker's plain lines otherwise,
//! nothing at all when quiet.

use std::collections::HashMap;
use std::io::Write;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::stdio;

#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    /// The stream's own error message (a failed transfer).
    #[error("{0}")]
    Failed(String),
    #[error("bad message from the daemon")]
    Decode(#[source] serde_json::Error),
    #[error("reading the daemon's answer")]
    Body(#[from] hyper::Error),
    #[error("writing to {0}")]
    Write(&'static str, #[source] std::io::Error),
}

type Result<T> = std::result::Result<T, ProgressError>;

/// Calls `f` with each JSON message of `body` as it arrives.
pub async fn messages(mut body: Incoming, mut f: impl FnMut(&Value) -> Result<()>) -> Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let frame = body.frame().await;
        let done = frame.is_none();
        if let Some(frame) = frame
            && let Ok(data) = frame?.into_data()
        {
            buf.extend_from_slice(&data);
        }
        let mut stream = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
        let mut consumed = 0;
        loop {
            match stream.next() {
                Some(Ok(v)) => {
                    consumed = stream.byte_offset();
                    f(&v)?;
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return Err(ProgressError::Decode(e)),
                None => break,
            }
        }
        buf.drain(..consumed);
        if done {
            return Ok(());
        }
    }
}

/// The error a message carries, if it is one.
pub fn error_of(v: &Value) -> Option<String> {
    v.get("errorDetail")
        .and_then(|d| d.get("message"))
        .or_else(|| v.get("error"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Statuses after which a layer's line stays as it is.
const FINAL: [&str; 6] = [
    "Pull complete",
    "Already exists",
    "Pushed",
    "Layer already exists",
    "Download complete",
    "Mounted from",
];

enum Mode {
    Quiet,
    Plain {
        stderr: bool,
    },
    Bars {
        multi: MultiProgress,
        bars: HashMap<String, (ProgressBar, String)>,
    },
}

/// Draws one transfer's messages.
pub struct Display {
    mode: Mode,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Display {
    /// Bars when the stream it writes to (stdout, or stderr for `run`'s pull) is a terminal.
    pub fn new(quiet: bool, to_stderr: bool) -> Display {
        let tty = if to_stderr {
            rustix::termios::isatty(std::io::stderr())
        } else {
            stdio::stdout_is_tty()
        };
        let mode = if quiet {
            Mode::Quiet
        } else if tty {
            let target = if to_stderr {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::stdout()
            };
            Mode::Bars {
                multi: MultiProgress::with_draw_target(target),
                bars: HashMap::new(),
            }
        } else {
            Mode::Plain { stderr: to_stderr }
        };
        Display { mode }
    }

    /// Shows one message; an error message fails.
    pub fn show(&mut self, v: &Value) -> Result<()> {
        if let Some(err) = error_of(v) {
            self.finish();
            return Err(ProgressError::Failed(err));
        }
        let status = v.get("status").and_then(Value::as_str);
        let id = v
            .get("id")
            .and_then(Value::as_str)
            .filter(|i| !i.is_empty());
        let text = match (v.get("stream").and_then(Value::as_str), status) {
            (Some(s), _) => s.to_string(),
            (None, Some(status)) => match id {
                Some(id) => format!("{id}: {status}\n"),
                None => format!("{status}\n"),
            },
            (None, None) => return Ok(()),
        };
        let detail = v.get("progressDetail");
        let current = detail
            .and_then(|d| d.get("current"))
            .and_then(Value::as_u64);
        match &mut self.mode {
            Mode::Quiet => Ok(()),
            Mode::Plain { stderr } => {
                // Byte counts are for bars; every other line is kept.
                if current.is_some() {
                    return Ok(());
                }
                if *stderr {
                    std::io::stderr()
                        .write_all(text.as_bytes())
                        .map_err(|e| ProgressError::Write("stderr", e))
                } else {
                    stdio::write_stdout(text.as_bytes());
                    Ok(())
                }
            }
            Mode::Bars { multi, bars } => {
                let (Some(id), Some(status), Some(_)) = (id, status, detail) else {
                    let _ = multi.println(text.trim_end_matches('\n'));
                    return Ok(());
                };
                let (bar, shown) = bars.entry(id.to_string()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(0));
                    b.set_prefix(id.to_string());
                    (b, String::new())
                });
                let total = detail.and_then(|d| d.get("total")).and_then(Value::as_u64);
                if let Some(current) = current {
                    if shown != status {
                        // A new phase (Downloading, then Extracting): speed and ETA restart.
                        bar.reset();
                        bar.set_style(style(if total.is_some() {
                            "{prefix}: {msg:<11} [{bar:40}] {decimal_bytes:>9}/{decimal_total_bytes:<9} {decimal_bytes_per_sec:>11}  ETA {eta}"
                        } else {
                            "{prefix}: {msg:<11} {decimal_bytes:>9} {decimal_bytes_per_sec:>11}"
                        }));
                        bar.set_message(status.to_string());
                        *shown = status.to_string();
                    }
                    if let Some(t) = total {
                        bar.set_length(t);
                    }
                    bar.set_position(current);
                } else {
                    bar.set_style(style("{prefix}: {msg}"));
                    bar.set_message(status.to_string());
                    *shown = status.to_string();
                    if FINAL.iter().any(|f| status.starts_with(f)) {
                        bar.tick();
                    }
                }
                Ok(())
            }
        }
    }

    /// Leaves every bar as last drawn.
    pub fn finish(&mut self) {
        if let Mode::Bars { bars, .. } = &mut self.mode {
            for (bar, _) in bars.values() {
                bar.abandon();
            }
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.finish();
    }
}
