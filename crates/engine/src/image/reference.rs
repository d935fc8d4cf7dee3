//! Image references as Docker reads them: `busybox` is `docker.io/library/busybox:latest`.

use super::ImageError;
use crate::content::{Digest, is_hex64};

pub const DEFAULT_DOMAIN: &str = "docker.io";
pub const DEFAULT_TAG: &str = "latest";

/// A parsed, normalised reference: `domain/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

fn invalid(msg: impl Into<String>) -> ImageError {
    ImageError::InvalidReference(msg.into())
}

impl Reference {
    /// Parses and normalises `s`; no tag is added.
    pub fn parse(s: &str) -> Result<Reference, ImageError> {
        if s.is_empty() {
            return Err(invalid("repository name must have at least one component"));
        }
        if is_hex64(s) {
            return Err(invalid(format!(
                "invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
            )));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(Digest::parse(d).map_err(|_| invalid(format!("invalid digest in {s:?}")))?),
            ),
            None => (s, None),
        };
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(invalid(format!("invalid tag {tag:?} in {s:?}")));
        }
        let (domain, path) = split_domain(name);
        if !valid_domain(&domain) {
            return Err(invalid(format!("invalid registry {domain:?} in {s:?}")));
        }
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid(format!(
                "repository name ({path}) must be lowercase"
            )));
        }
        if path.is_empty() || !path.split('/').all(valid_component) {
            return Err(invalid(format!("{s:?} is not a valid repository name")));
        }
        if domain.len() + 1 + path.len() > 255 {
            return Err(invalid(
                "repository name must not be more than 255 characters",
            ));
        }
        Ok(Reference {
            domain,
            path,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// `self` with the tag `latest` when it has neither tag nor digest.
    pub fn with_default_tag(mut self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some(DEFAULT_TAG.to_string());
        }
        self
    }

    /// `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// `busybox`, `user/app`, `localhost:5000/x`: the short form Docker prints.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix("library/") {
                Some(p) if !p.contains('/') => p.to_string(),
                _ => self.path.clone(),
            }
        } else {
            self.name()
        }
    }

    /// The key in the tags table: full name and the tag, or the digest when there is one.
    pub fn key(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{}@{d}", self.name()),
            (None, Some(t)) => format!("{}:{t}", self.name()),
            (None, None) => self.name(),
        }
    }

    /// `busybox:latest` or `busybox@sha256:...`, as Docker prints references.
    pub fn familiar(&self) -> String {
        let mut out = self.familiar_name();
        if let Some(t) = &self.tag {
            out.push(':');
            out.push_str(t);
        }
        if let Some(d) = &self.digest {
            out.push('@');
            out.push_str(d.as_str());
        }
        out
    }
}

/// Docker's rule: the first component is a registry when it has a `.` or `:` or is
/// `localhost`; otherwise the name is on Docker Hub, under `library/` when it has one part.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first != first.to_lowercase() =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == "index.docker.io" {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !path.contains('/') {
        path = format!("library/{path}");
    }
    (domain, path)
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()))
    {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

/// One path component: `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|s| s == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> String {
        Reference::parse(s).unwrap().with_default_tag().key()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(key("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(key("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(
            key("docker.io/library/busybox:latest"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            key("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(key("user/app"), "docker.io/user/app:latest");
        assert_eq!(key("localhost:5000/x:y"), "localhost:5000/x:y");
        assert_eq!(key("localhost/x"), "localhost/x:latest");
        assert_eq!(key("reg.example/a/b/c:v1"), "reg.example/a/b/c:v1");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            key(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        let r = Reference::parse("localhost:5000/x:y").unwrap();
        assert_eq!(r.familiar(), "localhost:5000/x:y");
        let r = Reference::parse("docker.io/library/busybox")
            .unwrap()
            .with_default_tag();
        assert_eq!(r.familiar(), "busybox:latest");
        assert_eq!(
            Reference::parse("user/app:v").unwrap().familiar(),
            "user/app:v"
        );
    }

    #[test]
    fn refuses_bad_references() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:bad/tag",
            "-x",
            "a//b",
            "a..b",
            "busybox@sha256:abc",
            &"a".repeat(64),
            "x:-tag",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let err = Reference::parse(&"a".repeat(64)).unwrap_err().to_string();
        assert!(err.contains("64-byte hexadecimal"), "{err}");
        let err = Reference::parse("Busybox").unwrap_err().to_string();
        assert!(err.contains("must be lowercase"), "{err}");
    }
}
