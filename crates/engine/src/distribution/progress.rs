//! Docker's JSON progress messages, which `docker pull` and `docker push` draw as bars.

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::Sender;

/// Byte counts of one layer's transfer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub message: String,
}

/// One progress message, serialised as Docker's daemon writes it on a pull or push stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(
        rename = "progressDetail",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub progress_detail: Option<ProgressDetail>,
    /// The bar as text, for clients that print rather than draw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aux: Option<serde_json::Value>,
    #[serde(
        rename = "errorDetail",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub error_detail: Option<ErrorDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Progress {
    /// A line of its own: `Digest: sha256:...`, `Status: ...`.
    pub fn status(status: impl Into<String>) -> Progress {
        Progress {
            status: Some(status.into()),
            ..Default::default()
        }
    }

    /// A status of one layer (`Pulling fs layer`, `Pull complete`, `Pushed`), keyed by `id`.
    pub fn layer(id: &str, status: impl Into<String>) -> Progress {
        Progress {
            status: Some(status.into()),
            progress_detail: Some(ProgressDetail::default()),
            id: Some(id.to_string()),
            ..Default::default()
        }
    }

    /// `Downloading` / `Pushing` / `Extracting` with byte counts and the bar as text.
    pub fn bytes(id: &str, status: &str, current: u64, total: u64) -> Progress {
        Progress {
            status: Some(status.to_string()),
            progress_detail: Some(ProgressDetail {
                current: Some(current),
                total: (total > 0).then_some(total),
            }),
            progress: Some(bar(current, total)),
            id: Some(id.to_string()),
            ..Default::default()
        }
    }

    /// The last message of a failed stream.
    pub fn error(message: impl Into<String>) -> Progress {
        let message = message.into();
        Progress {
            error_detail: Some(ErrorDetail {
                message: message.clone(),
            }),
            error: Some(message),
            ..Default::default()
        }
    }

    /// The id with which a progress stream names a blob: its first 12 hex digits.
    pub fn short_id(digest: &str) -> String {
        let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
        hex.chars().take(12).collect()
    }
}

/// Sends a status message; a client that went away does not stop the transfer.
pub(crate) async fn send(tx: &Sender<Progress>, p: Progress) {
    let _ = tx.send(p).await;
}

/// Sends a byte count only when there is room: counts are superseded by the next one.
pub(crate) fn offer(tx: &Sender<Progress>, p: Progress) {
    let _ = tx.try_send(p);
}

/// Sizes as Docker prints them: decimal units, four significant digits (`527.8kB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    let int_digits = if v < 10.0 {
        1
    } else if v < 100.0 {
        2
    } else {
        3
    };
    let text = format!("{v:.prec$}", prec = 4 - int_digits);
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", UNITS[unit])
}

/// `[=====>      ]  1.2MB/3.4MB`: 50 cells, as Docker draws a transfer.
fn bar(current: u64, total: u64) -> String {
    if total == 0 {
        return format!("{:>8}", human_size(current));
    }
    let filled = ((current.min(total) as f64 / total as f64) * 50.0) as usize;
    let cells = if filled >= 50 {
        "=".repeat(50)
    } else {
        format!("{}>{}", "=".repeat(filled), " ".repeat(49 - filled))
    };
    format!("[{cells}] {:>8}/{}", human_size(current), human_size(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_serialise_as_docker_writes_them() {
        let p = Progress::layer("0123456789ab", "Pulling fs layer");
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"status":"Pulling fs layer","progressDetail":{},"id":"0123456789ab"}"#
        );
        let p = Progress::bytes("0123456789ab", "Downloading", 500, 1000);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["progressDetail"]["current"], 500);
        assert_eq!(v["progressDetail"]["total"], 1000);
        assert_eq!(v["status"], "Downloading");
        let bar = v["progress"].as_str().unwrap();
        assert!(bar.starts_with("[=========================>"), "{bar}");
        assert!(bar.ends_with("500B/1kB"), "{bar}");
        let p = Progress::error("boom");
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"errorDetail":{"message":"boom"},"error":"boom"}"#
        );
        assert_eq!(
            serde_json::to_string(&Progress::status("Digest: sha256:x")).unwrap(),
            r#"{"status":"Digest: sha256:x"}"#
        );
        assert_eq!(
            Progress::short_id(&format!("sha256:{}", "ab".repeat(32))),
            "abababababab"
        );
    }

    #[test]
    fn sizes_read_like_dockers() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(766), "766B");
        assert_eq!(human_size(527_800), "527.8kB");
        assert_eq!(human_size(1_500_000), "1.5MB");
        assert_eq!(human_size(12_345_678), "12.35MB");
        assert_eq!(human_size(1_000_000_000), "1GB");
    }
}
