//! Cross-repository blob mount.
//!
//! A mount needs access to two repositories at once: push to the target, pull from the
//! source. oci-client asks a token server for the target's scope only, and a registry with
//! token auth then answers a mount by opening an ordinary upload instead. So the mount is
//! made here, asking for a token that covers both scopes when the registry wants one.

use oci_client::secrets::RegistryAuth;
use reqwest::StatusCode;

use super::{Challenge, Remote};

impl Remote {
    fn base(&self) -> String {
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
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
    }

    /// Mounts blob `digest` from repository `from` (a path on the same registry) into ours;
    /// false when the registry would not (the caller uploads instead).
    pub async fn mount(&self, digest: &str, from: &str) -> bool {
        let url = format!(
            "{}/v2/{}/blobs/uploads/?mount={digest}&from={from}",
            self.base(),
            self.reference.path
        );
        let post = |auth: Option<String>| {
            let req = self
                .http
                .post(&url)
                .header(reqwest::header::CONTENT_LENGTH, "0");
            let req = match auth {
                Some(token) => req.bearer_auth(token),
                None => self.with_auth(req),
            };
            req.send()
        };
        let Ok(mut res) = post(None).await else {
            return false;
        };
        if res.status() == StatusCode::UNAUTHORIZED {
            let challenge = res
                .headers()
                .get_all(reqwest::header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(Challenge::parse)
                .find(|c| c.scheme == "bearer");
            let Some(challenge) = challenge else {
                return false;
            };
            let scopes = [
                format!("repository:{}:pull,push", self.reference.path),
                format!("repository:{from}:pull"),
            ];
            let Some(token) = self.token(&challenge, &scopes).await else {
                return false;
            };
            res = match post(Some(token.clone())).await {
                Ok(r) => r,
                Err(_) => return false,
            };
            if res.status() == StatusCode::ACCEPTED {
                self.cancel_upload(&res, Some(&token)).await;
            }
        } else if res.status() == StatusCode::ACCEPTED {
            self.cancel_upload(&res, None).await;
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
        let url = if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{location}", self.base())
        };
        let req = self.http.delete(&url);
        let req = match token {
            Some(t) => req.bearer_auth(t),
            None => self.with_auth(req),
        };
        let _ = req.send().await;
    }
}
