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

#[cfg(test)]
mod tests {
    use super::*;

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
