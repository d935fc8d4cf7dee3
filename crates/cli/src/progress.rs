//! The daemon's JSON message streams (pull, push, import, load) as the user sees them:
//! per-layer bars with size, speed and ETA on a terminal, docker's plain lines otherwise,
//! nothing at all when quiet.

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

/// One layer's bar and what it shows: the status, and the total of the phase (a new status
/// or total starts a new phase, whose speed and ETA start afresh).
struct Layer {
    bar: ProgressBar,
    status: String,
    total: Option<u64>,
}

/// Layers being drawn, in the order they first appeared.
struct Bars {
    multi: MultiProgress,
    layers: Vec<(String, Layer)>,
    stderr: bool,
}

enum Mode {
    Quiet,
    Plain { stderr: bool },
    Bars(Bars),
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

/// Statuses whose byte counts are a transfer (speed and ETA mean something).
const TRANSFERS: [&str; 2] = ["Downloading", "Pushing"];

fn write_to(stderr: bool, text: &str) -> Result<()> {
    if stderr {
        std::io::stderr()
            .write_all(text.as_bytes())
            .map_err(|e| ProgressError::Write("stderr", e))
    } else {
        stdio::write_stdout(text.as_bytes());
        Ok(())
    }
}

impl Bars {
    fn layer(&mut self, id: &str) -> &mut Layer {
        let at = match self.layers.iter().position(|(i, _)| i == id) {
            Some(at) => at,
            None => {
                let bar = ProgressBar::new(0).with_style(style("{prefix}: {msg}"));
                bar.set_prefix(id.to_string());
                let bar = self.multi.add(bar);
                self.layers.push((
                    id.to_string(),
                    Layer {
                        bar,
                        status: String::new(),
                        total: None,
                    },
                ));
                self.layers.len() - 1
            }
        };
        &mut self.layers[at].1
    }

    fn update(&mut self, id: &str, status: &str, current: Option<u64>, total: Option<u64>) {
        let layer = self.layer(id);
        let Some(current) = current else {
            layer.bar.set_style(style("{prefix}: {msg}"));
            layer.bar.set_message(status.to_string());
            layer.status = status.to_string();
            layer.total = None;
            return;
        };
        if layer.status != status || layer.total != total {
            layer.bar.reset();
            layer.bar.set_length(total.unwrap_or(0));
            let template = match (total.is_some(), TRANSFERS.contains(&status)) {
                (true, true) => {
                    "{prefix}: {msg:<11} [{bar:40}] {decimal_bytes:>9}/{decimal_total_bytes:<9} {decimal_bytes_per_sec:>11}  ETA {eta}"
                }
                (true, false) => {
                    "{prefix}: {msg:<11} [{bar:40}] {decimal_bytes:>9}/{decimal_total_bytes}"
                }
                (false, _) => "{prefix}: {msg:<11} {decimal_bytes:>9} {decimal_bytes_per_sec:>11}",
            };
            layer.bar.set_style(style(template));
            layer.bar.set_message(status.to_string());
            layer.status = status.to_string();
            layer.total = total;
        }
        layer.bar.set_position(current);
    }

    /// Replaces the bars by one plain line per layer with its last status (as docker leaves
    /// the screen), so that later lines come below them.
    fn settle(&mut self) -> Result<()> {
        if self.layers.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for (id, layer) in self.layers.drain(..) {
            layer.bar.finish_and_clear();
            text.push_str(&format!("{id}: {}\n", layer.status));
        }
        let _ = self.multi.clear();
        write_to(self.stderr, &text)
    }
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
            Mode::Bars(Bars {
                multi: MultiProgress::with_draw_target(target),
                layers: Vec::new(),
                stderr: to_stderr,
            })
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
        let number = |k: &str| detail.and_then(|d| d.get(k)).and_then(Value::as_u64);
        let current = number("current");
        match &mut self.mode {
            Mode::Quiet => Ok(()),
            // Byte counts are for bars; every other line is kept.
            Mode::Plain { .. } if current.is_some() => Ok(()),
            Mode::Plain { stderr } => write_to(*stderr, &text),
            Mode::Bars(bars) => match (id, status, detail) {
                // A layer's message (docker's have a progressDetail, even empty).
                (Some(id), Some(status), Some(_)) => {
                    bars.update(id, status, current, number("total"));
                    Ok(())
                }
                _ => {
                    bars.settle()?;
                    write_to(bars.stderr, &text)
                }
            },
        }
    }

    /// Leaves every layer's last status on the screen.
    pub fn finish(&mut self) {
        if let Mode::Bars(bars) = &mut self.mode {
            let _ = bars.settle();
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.finish();
    }
}
