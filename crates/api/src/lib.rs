//! Docker Engine API models shared by the CLI and the daemon: the contract between them.
//! No I/O here. Models come from `bollard-stubs` (generated from moby's swagger); what it lacks
//! (query strings, a few bodies) is defined in this crate.

pub use bollard_stubs::models;

/// The API version wharf implements and reports.
pub const API_VERSION: &str = "1.47";
/// The oldest API version wharf accepts from a client.
pub const MIN_API_VERSION: &str = "1.24";

/// Parses "1.43" into (1, 43).
pub fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Splits a request path like `/v1.43/containers/json` into the version and the rest.
pub fn strip_version(path: &str) -> (Option<&str>, &str) {
    if let Some(rest) = path.strip_prefix("/v") {
        let end = rest.find('/').unwrap_or(rest.len());
        let version = &rest[..end];
        if parse_version(version).is_some() {
            let tail = &rest[end..];
            return (Some(version), if tail.is_empty() { "/" } else { tail });
        }
    }
    (None, path)
}

/// The body of every error response: `{"message": "..."}`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub message: String,
}

/// Docker's `filters` query value: `{"status":["exited"]}`, or the older
/// `{"status":{"exited":true}}` form that the docker CLI 20.10 still sends.
pub type Filters = std::collections::HashMap<String, Vec<String>>;

/// Parses a `filters` query value; empty input is no filters.
pub fn parse_filters(raw: &str) -> Result<Filters, String> {
    if raw.trim().is_empty() {
        return Ok(Filters::new());
    }
    let value: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| format!("invalid filter: {e}"))?;
    let obj = value
        .as_object()
        .ok_or("invalid filter: not a JSON object")?;
    let mut out = Filters::new();
    for (key, v) in obj {
        let values = match v {
            serde_json::Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(String::from).ok_or("invalid filter value"))
                .collect::<Result<_, _>>()?,
            serde_json::Value::Object(map) => map
                .iter()
                .filter(|(_, on)| on.as_bool().unwrap_or(false))
                .map(|(k, _)| k.clone())
                .collect(),
            serde_json::Value::String(s) => vec![s.clone()],
            _ => return Err(format!("invalid filter value for '{key}'")),
        };
        out.insert(key.clone(), values);
    }
    Ok(out)
}

/// Encodes filters in the current form.
pub fn encode_filters(filters: &Filters) -> String {
    serde_json::to_string(filters).unwrap_or_else(|_| "{}".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_in_both_forms() {
        let a = parse_filters(r#"{"status":["exited","created"]}"#).unwrap();
        assert_eq!(a["status"], vec!["exited", "created"]);
        let b = parse_filters(r#"{"label":{"a=b":true}}"#).unwrap();
        assert_eq!(b["label"], vec!["a=b"]);
        assert!(parse_filters("[1]").is_err());
        assert!(parse_filters("").unwrap().is_empty());
    }

    #[test]
    fn strips_version_prefix() {
        assert_eq!(
            strip_version("/v1.43/containers/json"),
            (Some("1.43"), "/containers/json")
        );
        assert_eq!(strip_version("/_ping"), (None, "/_ping"));
        assert_eq!(strip_version("/v1.24"), (Some("1.24"), "/"));
        assert_eq!(strip_version("/volumes"), (None, "/volumes"));
    }
}
