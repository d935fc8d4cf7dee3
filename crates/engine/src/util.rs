//! Small helpers shared by the engine's modules: ids, timestamps, atomic file writes.

use std::io::Write;
use std::path::Path;

/// A new random 64-hex-digit id, as Docker uses for containers and exec instances.
pub fn random_id() -> String {
    let mut bytes = [0u8; 32];
    // The only failure is an unavailable entropy source, which a Linux host always has; an
    // id from the clock and pid would still be unique enough for a fallback.
    if getrandom::fill(&mut bytes).is_err() {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
            ^ u128::from(std::process::id());
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8 ^ i as u8;
        }
    }
    hex::encode(bytes)
}

/// Now, in Docker's timestamp form: RFC 3339 with nanoseconds, UTC.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Docker's "never": what StartedAt/FinishedAt say before the event.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Seconds since the epoch of an RFC 3339 timestamp (0 if it does not parse).
pub fn unix_seconds(ts: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(ts)
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

/// Writes `data` to `path` so a crash leaves the old file or the new one: temp, fsync, rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Writes `data` to `path` through a temp file and a rename, without an fsync: for files that
/// every start writes afresh (a crash loses nothing that the next start does not rewrite).
pub fn write_replace(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// A duration as Docker words it in `ps` ("Up 3 seconds", "Exited (0) About a minute ago").
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let minutes = (s as f64 / 60.0).round() as i64;
    let hours = (s as f64 / 3600.0).round() as i64;
    match () {
        _ if s < 1 => "Less than a second".into(),
        _ if s == 1 => "1 second".into(),
        _ if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(59), "59 seconds");
        assert_eq!(human_duration(61), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(3 * 86400), "3 days");
    }

    #[test]
    fn ids_are_64_hex() {
        let id = random_id();
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, random_id());
    }
}
