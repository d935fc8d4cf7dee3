//! Docker's human-readable units: sizes ("4.26MB"), durations ("About a minute"), byte counts
//! in flags ("32m"), Go's `%g` and `strconv.Quote`, and the `…` truncation of table cells.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum UnitsError {
    #[error("invalid size: '{0}'")]
    Size(String),
    #[error("invalid duration: '{0}'")]
    Duration(String),
    #[error("invalid time: '{0}'")]
    Time(String),
}

const DECIMAL: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
const BINARY: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];

fn scale(mut size: f64, base: f64, units: &[&'static str]) -> (f64, &'static str) {
    let mut i = 0;
    while size >= base && i < units.len() - 1 {
        size /= base;
        i += 1;
    }
    (size, units[i])
}

/// Decimal units with `precision` significant digits, as `docker images` prints sizes.
pub fn human_size_prec(size: f64, precision: usize) -> String {
    let (v, unit) = scale(size, 1000.0, &DECIMAL);
    format!("{}{unit}", go_g(v, precision))
}

/// Decimal units with 4 significant digits (docker's `HumanSize`).
pub fn human_size(size: f64) -> String {
    human_size_prec(size, 4)
}

/// Binary units with 4 significant digits (docker's `BytesSize`, used by `stats`).
pub fn bytes_size(size: f64) -> String {
    let (v, unit) = scale(size, 1024.0, &BINARY);
    format!("{}{unit}", go_g(v, 4))
}

/// Go's `%.{p}g`: shortest of %e and %f at `p` significant digits, trailing zeros removed.
pub fn go_g(v: f64, precision: usize) -> String {
    let p = precision.max(1);
    if v == 0.0 {
        return "0".to_string();
    }
    if !v.is_finite() {
        return if v.is_nan() {
            "NaN".into()
        } else if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let e_form = format!("{:.*e}", p - 1, v);
    let (mantissa, exp) = match e_form.split_once('e') {
        Some((m, e)) => (m.to_string(), e.parse::<i32>().unwrap_or(0)),
        None => (e_form.clone(), 0),
    };
    if exp < -4 || exp >= p as i32 {
        let m = trim_zeros(&mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        trim_zeros(&format!("{v:.decimals$}"))
    }
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// docker's `HumanDuration`: "Less than a second", "3 seconds", "About a minute", "2 hours"…
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    let seconds = secs as i64;
    if seconds < 1 {
        return "Less than a second".into();
    }
    if seconds == 1 {
        return "1 second".into();
    }
    if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = (secs / 60.0) as i64;
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (secs / 3600.0 + 0.5) as i64;
    if hours == 1 {
        return "About an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", (secs / 3600.0) as i64 / 24 / 365)
}

/// How long ago a unix timestamp was, docker style ("2 seconds ago").
pub fn ago(unix: i64) -> String {
    let now = chrono::Utc::now().timestamp_millis();
    let ms = (now - unix.saturating_mul(1000)).max(0) as u64;
    format!("{} ago", human_duration(Duration::from_millis(ms)))
}

/// A size with an optional k/m/g/t/p suffix in binary units ("32m", "1.5g", "512k", "100").
pub fn ram_in_bytes(s: &str) -> Result<i64, UnitsError> {
    let err = || UnitsError::Size(s.to_string());
    let t = s.trim();
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, rest) = t.split_at(num_end);
    if num.is_empty() {
        return Err(err());
    }
    let value: f64 = num.parse().map_err(|_| err())?;
    let rest = rest.trim_start().to_ascii_lowercase();
    let rest = rest.strip_suffix('b').unwrap_or(&rest);
    let rest = rest.strip_suffix('i').unwrap_or(rest);
    let mult: f64 = match rest {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0f64.powi(3),
        "t" => 1024.0f64.powi(4),
        "p" => 1024.0f64.powi(5),
        _ => return Err(err()),
    };
    Ok((value * mult) as i64)
}

/// A Go duration such as "10s", "1m30s", "1.5h", "300ms".
pub fn parse_go_duration(s: &str) -> Result<Duration, UnitsError> {
    let err = || UnitsError::Duration(s.to_string());
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let value: f64 = rest[..n_end].parse().map_err(|_| err())?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..u_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += value * mult;
        rest = &rest[u_end..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// `--since`/`--until` as the API wants them: "SECONDS[.NANOS]" since the epoch. Accepts a
/// Go duration (relative to now), RFC 3339 timestamps, dates, or a unix timestamp.
pub fn api_timestamp(
    value: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, UnitsError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(UnitsError::Time(value.to_string()));
    }
    // "0" is the epoch, not a zero duration (as docker reads it).
    if let Some(d) = parse_go_duration(v).ok().filter(|_| v != "0") {
        let t = now - chrono::Duration::from_std(d).map_err(|_| UnitsError::Time(v.to_string()))?;
        return Ok(format!(
            "{}.{:09}",
            t.timestamp(),
            t.timestamp_subsec_nanos()
        ));
    }
    if v.chars().all(|c| c.is_ascii_digit() || c == '.')
        && v.chars().filter(|c| *c == '.').count() <= 1
    {
        return Ok(v.to_string());
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Ok(format!(
            "{}.{:09}",
            t.timestamp(),
            t.timestamp_subsec_nanos()
        ));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(v, fmt) {
            let t = t.and_utc();
            return Ok(format!(
                "{}.{:09}",
                t.timestamp(),
                t.timestamp_subsec_nanos()
            ));
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(format!("{}.000000000", t.and_utc().timestamp()));
    }
    Err(UnitsError::Time(v.to_string()))
}

/// Go's `time.Time.String()` for a unix timestamp in UTC: "2024-01-02 15:04:05 +0000 UTC".
pub fn go_time_string(unix: i64) -> String {
    match chrono::DateTime::from_timestamp(unix, 0) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string(),
        None => String::new(),
    }
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                let n = c as u32;
                if n <= 0xffff {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Cuts `s` to `width` characters, the last being `…` when anything was cut.
pub fn ellipsis(s: &str, width: usize) -> String {
    if width == 0 {
        return String::new();
    }
    let count = s.chars().count();
    if count <= width {
        return s.to_string();
    }
    if width == 1 {
        return s.chars().take(1).collect();
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// The short form of an id: strips "sha256:" and keeps 12 characters.
pub fn short_id(id: &str) -> String {
    let id = id.split_once(':').map_or(id, |(_, h)| h);
    id.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_g_matches_go() {
        assert_eq!(go_g(4.262912, 3), "4.26");
        assert_eq!(go_g(12.5, 3), "12.5");
        assert_eq!(go_g(100.0, 3), "100");
        assert_eq!(go_g(999.9, 3), "1e+03");
        assert_eq!(go_g(0.0, 3), "0");
        assert_eq!(go_g(1.0, 4), "1");
        assert_eq!(go_g(0.000012, 3), "1.2e-05");
        assert_eq!(go_g(0.5, 4), "0.5");
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size_prec(4_262_912.0, 3), "4.26MB");
        assert_eq!(human_size_prec(0.0, 3), "0B");
        assert_eq!(human_size_prec(999.0, 3), "999B");
        assert_eq!(human_size_prec(1_000.0, 3), "1kB");
        assert_eq!(human_size_prec(1_990_000.0, 3), "1.99MB");
        assert_eq!(human_size(1_234_567.0), "1.235MB");
        assert_eq!(bytes_size(1024.0 * 1024.0 * 1.5), "1.5MiB");
        assert_eq!(bytes_size(512.0), "512B");
    }

    #[test]
    fn durations() {
        let s = |n| human_duration(Duration::from_secs(n));
        assert_eq!(
            human_duration(Duration::from_millis(400)),
            "Less than a second"
        );
        assert_eq!(s(1), "1 second");
        assert_eq!(s(2), "2 seconds");
        assert_eq!(s(59), "59 seconds");
        assert_eq!(s(60), "About a minute");
        assert_eq!(s(119), "About a minute");
        assert_eq!(s(120), "2 minutes");
        assert_eq!(s(3599), "59 minutes");
        assert_eq!(s(3600), "About an hour");
        assert_eq!(s(5400), "2 hours");
        assert_eq!(s(47 * 3600), "47 hours");
        assert_eq!(s(48 * 3600), "2 days");
        assert_eq!(s(14 * 24 * 3600), "2 weeks");
        assert_eq!(s(60 * 24 * 3600), "2 months");
        assert_eq!(s(730 * 24 * 3600), "2 years");
    }

    #[test]
    fn ram() {
        assert_eq!(ram_in_bytes("32m").ok(), Some(32 * 1024 * 1024));
        assert_eq!(ram_in_bytes("32MB").ok(), Some(32 * 1024 * 1024));
        assert_eq!(ram_in_bytes("1g").ok(), Some(1 << 30));
        assert_eq!(ram_in_bytes("1.5k").ok(), Some(1536));
        assert_eq!(ram_in_bytes("100").ok(), Some(100));
        assert_eq!(ram_in_bytes("2 GiB").ok(), Some(2 << 30));
        assert!(ram_in_bytes("abc").is_err());
        assert!(ram_in_bytes("12x").is_err());
        assert!(ram_in_bytes("").is_err());
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10s").ok(), Some(Duration::from_secs(10)));
        assert_eq!(
            parse_go_duration("1m30s").ok(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_go_duration("1.5h").ok(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            parse_go_duration("300ms").ok(),
            Some(Duration::from_millis(300))
        );
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("x").is_err());
    }

    #[test]
    fn timestamps() {
        let now = chrono::DateTime::from_timestamp(1_000_000, 0).unwrap_or_default();
        assert_eq!(
            api_timestamp("10s", now).ok().as_deref(),
            Some("999990.000000000")
        );
        assert_eq!(
            api_timestamp("1700000000", now).ok().as_deref(),
            Some("1700000000")
        );
        assert_eq!(
            api_timestamp("2023-11-14T22:13:20Z", now).ok().as_deref(),
            Some("1700000000.000000000")
        );
        assert_eq!(
            api_timestamp("2023-11-14", now).ok().as_deref(),
            Some("1699920000.000000000")
        );
        assert!(api_timestamp("yesterday", now).is_err());
        assert_eq!(go_time_string(0), "1970-01-01 00:00:00 +0000 UTC");
    }

    #[test]
    fn quoting_and_cutting() {
        assert_eq!(go_quote("sh -c 'exit 3'"), "\"sh -c 'exit 3'\"");
        assert_eq!(go_quote("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\x01\"");
        assert_eq!(ellipsis("sleep 1000", 20), "sleep 1000");
        assert_eq!(
            ellipsis("/bin/sh -c 'while true; do sleep 1; done'", 20),
            "/bin/sh -c 'while t…"
        );
        assert_eq!(ellipsis("abc", 1), "a");
        assert_eq!(short_id("sha256:2c661f76a0132489c96a"), "2c661f76a013");
        assert_eq!(short_id("2c661f76a0132489c96a"), "2c661f76a013");
    }
}
