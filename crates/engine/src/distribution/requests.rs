//! The requests made here rather than through oci-client: manifests (read with a size bound
//! while they arrive; oci-client reads a whole body before anyone can look at its size) and
//! cross-repository mounts (which need one token for two repositories; oci-client asks a
//! token server for the target's scope only, and a registry with token auth then answers a
//! mount by opening an ordinary upload instead).

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use oci_client::secrets::RegistryAuth;
use reqwest::StatusCode;

use super::{Challenge, DistributionError, MAX_MANIFEST, Remote};

/// Bearer tokens fetched by these requests, by the scopes they cover.
pub(crate) type Tokens = std::sync::Mutex<HashMap<String, String>>;

impl Remote {
    pub(crate) fn base(&self) -> String {
        format!("{}://{}", self.scheme, self.oci.resolve_registry())
    }

    fn with_auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            RegistryAuth::Basic(u, p) => req.basic_auth(u, Some(p)),
            RegistryAuth::Bearer(t) => req.bearer_auth(t),
            RegistryAuth::Anonymous => req,
        }
    }

    /// A token for `scopes` from the realm `challenge` names, with our credentials.
    async fn token(&self, challenge: &Challenge, scopes: &[String]) -> Option<String> {
        let key = scopes.join(" ");
        if let Some(t) = self.tokens.lock().ok()?.get(&key) {
            return Some(t.clone());
        }
        let realm = challenge.params.get("realm")?;
        let mut query: Vec<(&str, &str)> = scopes.iter().map(|s| ("scope", s.as_str())).collect();
        if let Some(service) = challenge.params.get("service") {
            query.push(("service", service));
        }
        let mut req = self.http.get(realm).query(&query);
        if let RegistryAuth::Basic(u, p) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        let res = req.send().await.ok()?;
        if !res.status().is_success() {
            return None;
        }
        let body: serde_json::Value = res.json().await.ok()?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())?
            .to_string();
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(key, token.clone());
        }
        Some(token)
    }

    /// Sends the request `make` builds with the configured credentials; when the registry
    /// answers with a bearer challenge, again with a token for `scopes`. Returns the
    /// response and the token used, if any.
    async fn send_authorized(
        &self,
        make: impl Fn() -> reqwest::RequestBuilder,
        scopes: &[String],
    ) -> Result<(reqwest::Response, Option<String>), reqwest::Error> {
        let key = scopes.join(" ");
        let cached = self.tokens.lock().ok().and_then(|t| t.get(&key).cloned());
        if let Some(token) = cached {
            let res = make().bearer_auth(&token).send().await?;
            if res.status() != StatusCode::UNAUTHORIZED {
                return Ok((res, Some(token)));
            }
        }
        let res = self.with_auth(make()).send().await?;
        if res.status() != StatusCode::UNAUTHORIZED {
            return Ok((res, None));
        }
        let challenge = res
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(Challenge::parse)
            .find(|c| c.scheme == "bearer");
        let Some(challenge) = challenge else {
            return Ok((res, None));
        };
        let Some(token) = self.token(&challenge, scopes).await else {
            return Ok((res, None));
        };
        let res = make().bearer_auth(&token).send().await?;
        Ok((res, Some(token)))
    }

    /// `Unauthorized` with a hint to log in when no credentials were used.
    pub(crate) fn denied(&self, context: &str, detail: &str) -> DistributionError {
        let hint = if self.authenticated {
            String::new()
        } else {
            format!(" (no credentials for {}: log in first)", self.registry)
        };
        DistributionError::Unauthorized(format!("{context}: {detail}{hint}"))
    }

    /// The manifest or index `reference` (a tag or digest) names, byte for byte, refusing
    /// one over [`MAX_MANIFEST`] as soon as its size shows.
    pub(crate) async fn manifest(
        &self,
        reference: &str,
        accept: &[&str],
        shown: &str,
    ) -> Result<Bytes, DistributionError> {
        let context = format!("manifest for {shown}");
        let url = format!(
            "{}/v2/{}/manifests/{reference}",
            self.base(),
            self.reference.path
        );
        let accept = accept.join(", ");
        let scopes = [format!("repository:{}:pull", self.reference.path)];
        let (res, _) = self
            .send_authorized(
                || {
                    self.http
                        .get(&url)
                        .header(reqwest::header::ACCEPT, accept.as_str())
                },
                &scopes,
            )
            .await
            .map_err(|source| DistributionError::Http {
                context: context.clone(),
                source,
            })?;
        let status = res.status();
        if !status.is_success() {
            let body = res.bytes().await.unwrap_or_default();
            return Err(self.status_error(&context, status, &body));
        }
        let too_large = |n: u64| {
            DistributionError::BadContent(format!(
                "{context} is {n} bytes, over the {MAX_MANIFEST}-byte limit"
            ))
        };
        if let Some(n) = res.content_length()
            && n > MAX_MANIFEST as u64
        {
            return Err(too_large(n));
        }
        let mut body = BytesMut::new();
        let mut stream = res.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| DistributionError::Http {
                context: context.clone(),
                source,
            })?;
            body.extend_from_slice(&chunk);
            if body.len() > MAX_MANIFEST {
                return Err(too_large(body.len() as u64));
            }
        }
        Ok(body.freeze())
    }

    /// An error for a registry's non-success answer, with the words of its error body.
    fn status_error(&self, context: &str, status: StatusCode, body: &[u8]) -> DistributionError {
        let words = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                let errors = v.get("errors")?.as_array()?.clone();
                let texts: Vec<String> = errors
                    .iter()
                    .map(|e| {
                        let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
                        let msg = e.get("message").and_then(|m| m.as_str()).unwrap_or("");
                        format!("{}: {msg}", code.to_lowercase().replace('_', " "))
                    })
                    .collect();
                Some(texts.join("; "))
            })
            .filter(|t| !t.is_empty());
        match status {
            StatusCode::UNAUTHORIZED => self.denied(
                context,
                words
                    .as_deref()
                    .unwrap_or("unauthorized: authentication required"),
            ),
            StatusCode::FORBIDDEN => self.denied(
                context,
                words.as_deref().unwrap_or("denied: access forbidden"),
            ),
            StatusCode::NOT_FOUND => DistributionError::NotFound(format!(
                "{context}: {}",
                words.as_deref().unwrap_or("not found")
            )),
            s => DistributionError::Status(format!(
                "{context}: the registry answered {s}{}",
                words.map(|w| format!(": {w}")).unwrap_or_default()
            )),
        }
    }

    /// Mounts blob `digest` from repository `from` (a path on the same registry) into ours;
    /// false when the registry would not (the caller uploads instead).
    pub async fn mount(&self, digest: &str, from: &str) -> bool {
        let url = format!(
            "{}/v2/{}/blobs/uploads/?mount={digest}&from={from}",
            self.base(),
            self.reference.path
        );
        let scopes = [
            format!("repository:{}:pull,push", self.reference.path),
            format!("repository:{from}:pull"),
        ];
        let sent = self
            .send_authorized(
                || {
                    self.http
                        .post(&url)
                        .header(reqwest::header::CONTENT_LENGTH, "0")
                },
                &scopes,
            )
            .await;
        let Ok((res, token)) = sent else {
            return false;
        };
        if res.status() == StatusCode::ACCEPTED {
            self.cancel_upload(&res, token.as_deref()).await;
        }
        res.status() == StatusCode::CREATED
    }

    /// A refused mount opened an upload session: close it rather than leave it to expire.
    async fn cancel_upload(&self, res: &reqwest::Response, token: Option<&str>) {
        let Some(location) = res
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
        else {
            return;
        };
        let absolute = location.starts_with("http://") || location.starts_with("https://");
        let url = if absolute {
            location.to_string()
        } else {
            format!("{}{location}", self.base())
        };
        let req = self.http.delete(&url);
        // Credentials go to the registry only, never to another host it points at.
        let req = match token {
            _ if !url.starts_with(&format!("{}/", self.base())) => req,
            Some(t) => req.bearer_auth(t),
            None => self.with_auth(req),
        };
        let _ = req.send().await;
    }
}
