//! The registry client: pull, push, login, and the registry side of `docker inspect`.
//!
//! Transfers go through `oci-client` (manifests as raw bytes, blobs as streams) on top of the
//! image store. A pull streams each layer into the content store while unpacking it into a
//! snapshot, distinct layers in parallel; what it verifies is leased (see `image::lease`) so
//! an interrupted pull resumes from it, and a pull that fails leaves the store as it was. A
//! push compresses uncompressed layers in parallel and skips or mounts blobs the registry
//! already has. Which registry repositories hold a blob, and what a layer compressed to, is
//! remembered in `<root>/distribution/metadata.json` for later pushes.

pub mod auth;
mod metadata;
pub mod progress;
mod pull;
mod push;
mod requests;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;

use crate::content::ContentError;
use crate::error::ErrorKind;
use crate::image::{ImageError, ImageStore, Reference};
pub use auth::{AuthConfig, Challenge, CredentialStore};
pub use progress::Progress;
pub use pull::{PullResult, create_reference};
pub use push::{LayerCompression, PushResult};

/// Manifests larger than this are refused (the registry's own limit for accepting one).
pub const MAX_MANIFEST: usize = 4 << 20;
/// Image configs larger than this are refused: they are read into memory.
pub const MAX_CONFIG: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DistributionError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Content(#[from] ContentError),
    /// The request is wrong: a bad reference, platform or auth header.
    #[error("{0}")]
    Invalid(String),
    /// The registry refused the credentials, or wants some.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    /// The registry sent something wrong: too large, not JSON, not matching its digest.
    #[error("{0}")]
    BadContent(String),
    /// The registry answered with an unexpected status.
    #[error("{0}")]
    Status(String),
    #[error("{context}")]
    Registry {
        context: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("{context}")]
    Http {
        context: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("credential store: {0}")]
    Credentials(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl DistributionError {
    /// How the API reports this error. Refused credentials are `Invalid` here (the API
    /// answers 401 for them on `/auth`).
    pub fn kind(&self) -> ErrorKind {
        match self {
            DistributionError::Image(e) => e.kind(),
            DistributionError::NotFound(_) => ErrorKind::NotFound,
            DistributionError::Invalid(_)
            | DistributionError::Unauthorized(_)
            | DistributionError::BadContent(_)
            | DistributionError::Content(ContentError::Mismatch { .. }) => ErrorKind::Invalid,
            _ => ErrorKind::Internal,
        }
    }

    /// The message with every cause, as a progress stream's last line shows it.
    pub fn message(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            let text = s.to_string();
            if !text.is_empty() && !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = s.source();
        }
        out
    }

    /// Whether the registry's content was at fault (as opposed to the connection).
    pub fn is_bad_content(&self) -> bool {
        matches!(
            self,
            DistributionError::BadContent(_)
                | DistributionError::Content(ContentError::Mismatch { .. })
                | DistributionError::Image(ImageError::BadArchive(_) | ImageError::HostileLayer(_))
        )
    }
}

pub(crate) fn io_ctx(
    context: impl Into<String>,
) -> impl FnOnce(std::io::Error) -> DistributionError {
    let context = context.into();
    move |source| DistributionError::Io { context, source }
}

/// The registry client. One per engine; cheap to share.
pub struct Distribution {
    store: Arc<ImageStore>,
    credentials: CredentialStore,
    insecure: Vec<String>,
    metadata: metadata::Metadata,
    max_downloads: usize,
    max_uploads: usize,
    /// One pull per manifest at a time: a second waits and then finds the layers present.
    pulls: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A connection to one repository of one registry, with the credentials to use.
pub(crate) struct Remote {
    pub client: oci_client::Client,
    pub reference: Reference,
    pub oci: oci_client::Reference,
    pub auth: RegistryAuth,
    /// `127.0.0.1:5000` (the registry as written in the reference).
    pub registry: String,
    /// Whether any credentials were given or stored.
    pub authenticated: bool,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// For the requests oci-client does not make (manifests, cross-repository mounts).
    pub http: reqwest::Client,
    pub tokens: requests::Tokens,
}

impl Remote {
    /// The reference in the registry's terms, with `tag` or `digest`.
    pub fn oci_ref(&self, tag: Option<&str>, digest: Option<&str>) -> oci_client::Reference {
        let repo = self.reference.path.clone();
        let registry = self.reference.domain.clone();
        match (tag, digest) {
            (_, Some(d)) => oci_client::Reference::with_digest(registry, repo, d.to_string()),
            (Some(t), None) => oci_client::Reference::with_tag(registry, repo, t.to_string()),
            (None, None) => oci_client::Reference::with_tag(registry, repo, "latest".into()),
        }
    }

    /// Turns a client error into ours, with a clear word for refused access.
    pub fn error(&self, context: String, e: OciDistributionError) -> DistributionError {
        let denied = |detail: &str| self.denied(&context, detail);
        match &e {
            OciDistributionError::UnauthorizedError { .. } => {
                denied("unauthorized: authentication required")
            }
            OciDistributionError::AuthenticationFailure(msg) => {
                denied(&format!("authentication failed: {}", msg.trim()))
            }
            OciDistributionError::ServerError { code: 401, .. } => {
                denied("unauthorized: authentication required")
            }
            OciDistributionError::ServerError { code: 403, .. } => {
                denied("denied: access forbidden")
            }
            OciDistributionError::RequestError(r)
                if r.status() == Some(reqwest::StatusCode::UNAUTHORIZED) =>
            {
                denied("unauthorized: authentication required")
            }
            OciDistributionError::RequestError(r)
                if r.status() == Some(reqwest::StatusCode::FORBIDDEN) =>
            {
                denied("denied: access forbidden")
            }
            OciDistributionError::ServerError { code: 404, .. } => {
                DistributionError::NotFound(format!("{context}: not found"))
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                let text = envelope
                    .errors
                    .iter()
                    .map(|e| e.message.to_lowercase())
                    .collect::<Vec<_>>()
                    .join("; ");
                if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    denied(&text)
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                    )
                }) {
                    DistributionError::NotFound(format!("{context}: {text}"))
                } else {
                    DistributionError::Registry { context, source: e }
                }
            }
            _ => DistributionError::Registry { context, source: e },
        }
    }
}

fn http_client() -> Result<reqwest::Client, DistributionError> {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| DistributionError::Http {
            context: "setting up an http client".into(),
            source: e,
        })
}

/// Whether the registry is reached over plain HTTP: loopback hosts (127.0.0.0/8, ::1,
/// localhost) and the configured insecure registries, as Docker does.
pub fn is_insecure(registry: &str, insecure: &[String]) -> bool {
    if insecure.iter().any(|r| r == registry) {
        return true;
    }
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    if insecure.iter().any(|r| r == host) {
        return true;
    }
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

impl Distribution {
    /// A client over `store`, keeping its own state under `<root>/distribution`. Credentials
    /// not given with a request are read from Docker's default config location.
    pub fn new(store: Arc<ImageStore>, root: &Path) -> Result<Distribution, DistributionError> {
        let dir = root.join("distribution");
        std::fs::create_dir_all(&dir).map_err(io_ctx(format!("creating {}", dir.display())))?;
        Ok(Distribution {
            store,
            credentials: CredentialStore::default_location(),
            insecure: Vec::new(),
            metadata: metadata::Metadata::open(&dir),
            max_downloads: 3,
            max_uploads: 5,
            pulls: Default::default(),
        })
    }

    /// Reads stored credentials from `credentials` instead of the default location.
    pub fn with_credentials(mut self, credentials: CredentialStore) -> Distribution {
        self.credentials = credentials;
        self
    }

    /// Registries (`host:port` or `host`) reached over plain HTTP besides loopback ones.
    pub fn with_insecure_registries(mut self, registries: Vec<String>) -> Distribution {
        self.insecure = registries;
        self
    }

    /// How many layers download (and unpack) at once, and how many upload at once.
    pub fn with_concurrency(mut self, downloads: usize, uploads: usize) -> Distribution {
        self.max_downloads = downloads.max(1);
        self.max_uploads = uploads.max(1);
        self
    }

    pub fn credentials(&self) -> &CredentialStore {
        &self.credentials
    }

    fn scheme(&self, registry: &str) -> &'static str {
        if is_insecure(registry, &self.insecure) {
            "http"
        } else {
            "https"
        }
    }

    /// The credentials to use with `registry`: those given, else the stored ones.
    fn registry_auth(&self, registry: &str, given: Option<&AuthConfig>) -> (RegistryAuth, bool) {
        let stored;
        let auth = match given.filter(|a| a.credentials()) {
            Some(a) => a,
            None => match self.credentials.get(registry) {
                Ok(Some(a)) => {
                    stored = a;
                    &stored
                }
                Ok(None) => return (RegistryAuth::Anonymous, false),
                // Unreadable stored credentials must not stop a pull of a public image.
                Err(e) => {
                    tracing::warn!("{}; going on without credentials", e.message());
                    return (RegistryAuth::Anonymous, false);
                }
            },
        };
        if !auth.registry_token.is_empty() {
            return (RegistryAuth::Bearer(auth.registry_token.clone()), true);
        }
        if let Some((user, password)) = auth.user_password() {
            return (RegistryAuth::Basic(user, password), true);
        }
        tracing::warn!(
            "credentials for {registry} hold only an identity token, which wharf cannot use yet; going on without credentials"
        );
        (RegistryAuth::Anonymous, false)
    }

    pub(crate) async fn remote(
        &self,
        reference: &Reference,
        auth: Option<&AuthConfig>,
    ) -> Result<Remote, DistributionError> {
        let registry = reference.domain.clone();
        let scheme = self.scheme(&registry);
        let oci = oci_client::Reference::with_tag(
            registry.clone(),
            reference.path.clone(),
            "latest".into(),
        );
        let protocol = if scheme == "http" {
            ClientProtocol::HttpsExcept(vec![oci.resolve_registry().to_string()])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            use_monolithic_push: true,
            platform_resolver: None,
            connect_timeout: Some(std::time::Duration::from_secs(30)),
            user_agent: concat!("wharf/", env!("CARGO_PKG_VERSION")),
            max_concurrent_download: self.max_downloads,
            max_concurrent_upload: self.max_uploads,
            ..Default::default()
        };
        let client =
            oci_client::Client::try_from(config).map_err(|e| DistributionError::Registry {
                context: format!("setting up a client for {registry}"),
                source: e,
            })?;
        let (auth, authenticated) = self.registry_auth(&registry, auth);
        let http = http_client()?;
        // oci-client authenticates every later request with what is stored here.
        client
            .store_auth_if_needed(oci.resolve_registry(), &auth)
            .await;
        Ok(Remote {
            client,
            reference: reference.clone(),
            oci,
            auth,
            registry,
            authenticated,
            scheme,
            http,
            tokens: Default::default(),
        })
    }

    /// Checks credentials against their registry as `docker login` does (the API's
    /// `POST /auth`); nothing is stored. Returns Docker's status text.
    pub async fn login(&self, auth: &AuthConfig) -> Result<String, DistributionError> {
        let host = auth::registry_host(&auth.server_address);
        let registry = if host == crate::image::reference::DEFAULT_DOMAIN {
            "registry-1.docker.io".to_string()
        } else {
            host
        };
        let (user, password) = auth.user_password().ok_or_else(|| {
            DistributionError::Invalid("login needs a username and a password".into())
        })?;
        let url = format!("{}://{registry}/v2/", self.scheme(&registry));
        let http = http_client()?;
        let fail = |what: &str| {
            let context = format!("login to {url}: {what}");
            move |source| DistributionError::Http { context, source }
        };
        let denied = |status: reqwest::StatusCode| {
            DistributionError::Unauthorized(format!(
                "login attempt to {url} failed with status: {status}"
            ))
        };
        let ping = http.get(&url).send().await.map_err(fail("pinging"))?;
        if ping.status().is_success() {
            return Ok("Login Succeeded".into());
        }
        if ping.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Err(denied(ping.status()));
        }
        let challenge = ping
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(Challenge::parse)
            .find(|c| c.scheme == "bearer" || c.scheme == "basic");
        let authorized = match challenge {
            Some(c) if c.scheme == "bearer" => {
                let realm = c.params.get("realm").cloned().unwrap_or_default();
                let mut query = vec![("account", user.clone())];
                if let Some(s) = c.params.get("service") {
                    query.push(("service", s.clone()));
                }
                let res = http
                    .get(&realm)
                    .query(&query)
                    .basic_auth(&user, Some(&password))
                    .send()
                    .await
                    .map_err(fail("fetching a token"))?;
                if !res.status().is_success() {
                    return Err(denied(res.status()));
                }
                let body: serde_json::Value =
                    res.json().await.map_err(fail("reading the token"))?;
                let token = body
                    .get("token")
                    .or_else(|| body.get("access_token"))
                    .and_then(|t| t.as_str())
                    .unwrap_or_default()
                    .to_string();
                http.get(&url).bearer_auth(token)
            }
            _ => http.get(&url).basic_auth(&user, Some(&password)),
        };
        let res = authorized.send().await.map_err(fail("authenticating"))?;
        if res.status().is_success() {
            Ok("Login Succeeded".into())
        } else {
            Err(denied(res.status()))
        }
    }

    /// What `GET /distribution/{name}/json` answers: the descriptor the reference resolves
    /// to in its registry, and the platforms it offers.
    pub async fn inspect(
        &self,
        reference: &str,
        auth: Option<&AuthConfig>,
    ) -> Result<wharf_api::models::DistributionInspect, DistributionError> {
        use wharf_api::models::{DistributionInspect, OciDescriptor, OciPlatform};
        let r = Reference::parse(reference)?.with_default_tag();
        let remote = self.remote(&r, auth).await?;
        let fetched = pull::fetch_manifest(&remote, &r).await?;
        let mut platforms = Vec::new();
        match &fetched.kind {
            pull::Kind::Index(index) => {
                for d in &index.manifests {
                    if let Some(p) = &d.platform
                        && d.annotation("vnd.docker.reference.type").is_none()
                    {
                        platforms.push(OciPlatform {
                            architecture: Some(p.architecture.clone()),
                            os: Some(p.os.clone()),
                            variant: p.variant.clone(),
                            ..Default::default()
                        });
                    }
                }
            }
            pull::Kind::Manifest(m) => {
                let config = pull::fetch_config(&remote, &self.store, &m.config).await?;
                platforms.push(OciPlatform {
                    architecture: config.1.architecture.clone(),
                    os: config.1.os.clone(),
                    variant: config.1.variant.clone(),
                    ..Default::default()
                });
            }
        }
        Ok(DistributionInspect {
            descriptor: OciDescriptor {
                media_type: Some(fetched.media_type.clone()),
                digest: Some(fetched.digest.to_string()),
                size: Some(fetched.bytes.len() as i64),
                ..Default::default()
            },
            platforms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_registries_are_plain_http() {
        let none: Vec<String> = Vec::new();
        assert!(is_insecure("127.0.0.1:5000", &none));
        assert!(is_insecure("127.3.2.1", &none));
        assert!(is_insecure("localhost:5000", &none));
        assert!(is_insecure("[::1]:5000", &none));
        assert!(!is_insecure("docker.io", &none));
        assert!(!is_insecure("10.0.0.1:5000", &none));
        let list = vec!["reg.local:5000".to_string(), "other.local".to_string()];
        assert!(is_insecure("reg.local:5000", &list));
        assert!(!is_insecure("reg.local:6000", &list));
        assert!(is_insecure("other.local:443", &list));
    }

    #[test]
    fn futures_can_be_spawned() {
        fn send<T: Send>(_: &T) {}
        fn shared<T: Send + Sync>() {}
        shared::<Distribution>();
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(crate::meta::Meta::open(&dir.path().join("meta.redb")).unwrap());
        let store = Arc::new(ImageStore::open(dir.path(), meta).unwrap());
        let dist = Distribution::new(store, dir.path()).unwrap();
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        send(&dist.pull("x", None, None, &tx));
        send(&dist.pull_all_tags("x", None, None, &tx));
        send(&dist.push("x", None, None, LayerCompression::Gzip, &tx));
        send(&dist.login(&AuthConfig::default()));
        send(&dist.inspect("x", None));
    }

    #[test]
    fn messages_carry_their_causes() {
        let e = DistributionError::Io {
            context: "writing x".into(),
            source: std::io::Error::other("disk full"),
        };
        assert_eq!(e.message(), "writing x: disk full");
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert_eq!(
            DistributionError::NotFound("x".into()).kind(),
            ErrorKind::NotFound
        );
        assert!(DistributionError::BadContent("x".into()).is_bad_content());
    }
}
