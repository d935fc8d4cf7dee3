//! Image operations that need the containers too: which images are in use, and the image
//! list with Docker's filters and container counts.

use std::sync::Arc;

use wharf_api::Filters;
use wharf_api::models::ImageSummary;

use crate::image::{ImageError, InUse};
use crate::{Engine, Status};

impl Engine {
    /// Whether a container uses the image: running ones block removal even when forced.
    pub fn image_in_use(&self, image_id: &str) -> InUse {
        let mut stopped = None;
        for c in self.registry().all() {
            let r = c.record();
            if r.image_id != image_id {
                continue;
            }
            if matches!(
                r.state.status,
                Status::Running | Status::Paused | Status::Restarting
            ) {
                return InUse::Running(r.id.clone());
            }
            stopped.get_or_insert_with(|| r.id.clone());
        }
        stopped.map_or(InUse::No, InUse::Stopped)
    }

    /// `GET /images/json`: tagged images (all with `all`), filtered, newest first.
    pub fn image_list(
        self: &Arc<Self>,
        all: bool,
        filters: &Filters,
    ) -> Result<Vec<ImageSummary>, ImageError> {
        for key in filters.keys() {
            if !matches!(
                key.as_str(),
                "dangling" | "reference" | "label" | "before" | "since"
            ) {
                return Err(ImageError::Invalid(format!("invalid filter '{key}'")));
            }
        }
        let images = self.images.list()?;
        let created_of = |name: &str| self.images.resolve(name).ok().map(|i| i.created_unix());
        let before = filters
            .get("before")
            .and_then(|v| v.first())
            .map(|n| created_of(n));
        let since = filters
            .get("since")
            .and_then(|v| v.first())
            .map(|n| created_of(n));
        let containers: Vec<String> = self
            .registry()
            .all()
            .iter()
            .map(|c| c.record().image_id.clone())
            .collect();
        let mut out = Vec::new();
        for image in &images {
            let dangling = image.repo_tags.is_empty();
            if let Some(want) = filters.get("dangling").and_then(|v| v.first()) {
                if (want == "true" || want == "1") != dangling {
                    continue;
                }
            } else if dangling && !all {
                // Untagged images are listed only with --all (wharf keeps no intermediate
                // build images, so dangling ones are the untagged).
            }
            if let Some(refs) = filters.get("reference")
                && !refs.iter().any(|pattern| {
                    image
                        .repo_tags
                        .iter()
                        .any(|t| reference_matches(pattern, t))
                })
            {
                continue;
            }
            if let Some(labels) = filters.get("label") {
                let have = image.config.labels.clone().unwrap_or_default();
                let ok = labels.iter().all(|l| match l.split_once('=') {
                    Some((k, v)) => have.get(k).is_some_and(|x| x == v),
                    None => have.contains_key(l.as_str()),
                });
                if !ok {
                    continue;
                }
            }
            match before {
                Some(Some(t)) if image.created_unix() >= t => continue,
                Some(None) => return Err(ImageError::NotFound(filters["before"][0].clone())),
                _ => {}
            }
            match since {
                Some(Some(t)) if image.created_unix() <= t => continue,
                Some(None) => return Err(ImageError::NotFound(filters["since"][0].clone())),
                _ => {}
            }
            let mut summary = self.images.summary(image);
            summary.containers = containers.iter().filter(|id| **id == image.id).count() as i64;
            out.push(summary);
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.created));
        Ok(out)
    }
}

/// Docker's reference filter: a glob on the repository, or on `repository:tag`.
fn reference_matches(pattern: &str, tag: &str) -> bool {
    let repo = tag
        .rsplit_once(':')
        .map_or(tag, |(r, t)| if t.contains('/') { tag } else { r });
    glob(pattern, tag)
        || glob(pattern, repo)
        || glob(pattern, tag.trim_start_matches("docker.io/library/"))
}

/// `*` and `?` globbing (path-style: `*` does not cross `/`).
fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && t[0] != b'/' && go(p, &t[1..])),
            (Some(b'?'), Some(c)) if *c != b'/' => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_filter_globs() {
        assert!(reference_matches("busybox", "busybox:latest"));
        assert!(reference_matches("busy*", "busybox:latest"));
        assert!(reference_matches("busybox:lat*", "busybox:latest"));
        assert!(!reference_matches("alpine", "busybox:latest"));
        assert!(reference_matches("localhost:5000/x", "localhost:5000/x:1"));
    }
}
