//! Registry credentials: the `X-Registry-Auth` header, Docker's `config.json` (`auths`,
//! `credsStore`, `credHelpers`), and checking credentials against a registry (login).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use super::DistributionError;
use crate::image::reference::DEFAULT_DOMAIN;

/// The key Docker stores Docker Hub credentials under.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Credentials for one registry, as `X-Registry-Auth` and `POST /auth` carry them.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthConfig {
    #[serde(default, alias = "Username", skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(default, alias = "Password", skip_serializing_if = "String::is_empty")]
    pub password: String,
    /// `base64(username:password)`, as config.json keeps it.
    #[serde(default, alias = "Auth", skip_serializing_if = "String::is_empty")]
    pub auth: String,
    #[serde(
        rename = "serveraddress",
        alias = "ServerAddress",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub server_address: String,
    /// An OAuth2 refresh token a registry handed out at login.
    #[serde(
        rename = "identitytoken",
        alias = "IdentityToken",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub identity_token: String,
    /// A bearer token to send as is.
    #[serde(
        rename = "registrytoken",
        alias = "RegistryToken",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub registry_token: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("server_address", &self.server_address)
            .finish_non_exhaustive()
    }
}

fn invalid(msg: impl Into<String>) -> DistributionError {
    DistributionError::Invalid(msg.into())
}

impl AuthConfig {
    pub fn basic(server: &str, username: &str, password: &str) -> AuthConfig {
        AuthConfig {
            username: username.to_string(),
            password: password.to_string(),
            server_address: server.to_string(),
            ..Default::default()
        }
    }

    /// Decodes an `X-Registry-Auth` value: base64url (padded or not; standard base64 is
    /// accepted too) of a JSON object. An empty value or `{}` means no credentials.
    pub fn from_header(value: &str) -> Result<Option<AuthConfig>, DistributionError> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        let raw = URL_SAFE
            .decode(value)
            .or_else(|_| URL_SAFE_NO_PAD.decode(value))
            .or_else(|_| STANDARD.decode(value))
            .map_err(|_| invalid("X-Registry-Auth is not base64"))?;
        let auth: AuthConfig = serde_json::from_slice(&raw)
            .map_err(|e| invalid(format!("X-Registry-Auth is not an auth config: {e}")))?;
        Ok(auth.credentials().then_some(auth))
    }

    /// The `X-Registry-Auth` value for these credentials.
    pub fn to_header(&self) -> String {
        // Serialising a struct of strings cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE.encode(json)
    }

    /// Whether this holds anything to authenticate with.
    pub fn credentials(&self) -> bool {
        !(self.username.is_empty()
            && self.password.is_empty()
            && self.auth.is_empty()
            && self.identity_token.is_empty()
            && self.registry_token.is_empty())
    }

    /// Username and password, from the fields or from `auth`.
    pub fn user_password(&self) -> Option<(String, String)> {
        if !self.username.is_empty() || !self.password.is_empty() {
            return Some((self.username.clone(), self.password.clone()));
        }
        let raw = STANDARD.decode(self.auth.trim()).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (u, p) = text.split_once(':')?;
        Some((u.to_string(), p.to_string()))
    }
}

/// `https://127.0.0.1:5000/v2/` → `127.0.0.1:5000`; Docker Hub's names → `docker.io`.
pub fn registry_host(server: &str) -> String {
    let s = server.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or("");
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" | "docker.io" => DEFAULT_DOMAIN.into(),
        h => h.to_string(),
    }
}

/// The config.json key for a registry: Docker Hub's historical URL, else the host.
pub fn config_key(registry: &str) -> String {
    let host = registry_host(registry);
    if host == DEFAULT_DOMAIN {
        DOCKER_HUB_KEY.to_string()
    } else {
        host
    }
}

/// Docker's `config.json` in a directory (`$DOCKER_CONFIG`, else `~/.docker`).
#[derive(Debug, Clone)]
pub struct CredentialStore {
    dir: PathBuf,
    /// Where `docker-credential-<name>` helpers are looked for first (then `$PATH`).
    helpers: Option<PathBuf>,
}

fn cred_err(msg: impl Into<String>) -> DistributionError {
    DistributionError::Credentials(msg.into())
}

impl CredentialStore {
    /// Where the docker CLI keeps its configuration for this user.
    pub fn default_location() -> CredentialStore {
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))
            .unwrap_or_else(|| PathBuf::from("/root/.docker"));
        CredentialStore { dir, helpers: None }
    }

    pub fn at(dir: &Path) -> CredentialStore {
        CredentialStore {
            dir: dir.to_path_buf(),
            helpers: None,
        }
    }

    /// Looks for credential helper programs in `dir` before `$PATH`.
    pub fn with_helper_dir(mut self, dir: &Path) -> CredentialStore {
        self.helpers = Some(dir.to_path_buf());
        self
    }

    fn run_helper(
        &self,
        helper: &str,
        verb: &str,
        input: &[u8],
    ) -> Result<Vec<u8>, DistributionError> {
        let name = format!("docker-credential-{helper}");
        let program = self
            .helpers
            .as_ref()
            .map(|d| d.join(&name))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from(&name));
        run_helper(&program, verb, input)
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    fn read(&self) -> Result<serde_json::Map<String, serde_json::Value>, DistributionError> {
        let path = self.path();
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
            Err(e) => return Err(cred_err(format!("reading {}: {e}", path.display()))),
        };
        if data.iter().all(u8::is_ascii_whitespace) {
            return Ok(Default::default());
        }
        serde_json::from_slice(&data)
            .map_err(|e| cred_err(format!("{} is not valid JSON: {e}", path.display())))
    }

    fn write(
        &self,
        config: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), DistributionError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.path();
        let fail = |e: std::io::Error| cred_err(format!("writing {}: {e}", path.display()));
        std::fs::create_dir_all(&self.dir).map_err(fail)?;
        let data = serde_json::to_vec_pretty(config).map_err(|e| cred_err(e.to_string()))?;
        let tmp = self
            .dir
            .join(format!(".config.json.{}", crate::content::random_name()));
        let result = (|| {
            let mut f = std::fs::File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&data)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(fail)
    }

    /// The helper config.json names for `key`: `credHelpers[key]`, else `credsStore`.
    fn helper(config: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<String> {
        let host = registry_host(key);
        if let Some(helpers) = config.get("credHelpers").and_then(|h| h.as_object()) {
            for (k, v) in helpers {
                if (k == key || registry_host(k) == host)
                    && let Some(name) = v.as_str()
                {
                    return Some(name.to_string());
                }
            }
        }
        config
            .get("credsStore")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// The stored credentials for `registry`, if any. As the docker CLI reads them: from
    /// the helper `credHelpers` names for the registry, else from `credsStore`, else from
    /// `auths`.
    pub fn get(&self, registry: &str) -> Result<Option<AuthConfig>, DistributionError> {
        let key = config_key(registry);
        let path = self.path();
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(cred_err(format!("reading {}: {e}", path.display()))),
        };
        let config = self.read()?;
        if let Some(helper) = Self::helper(&config, &key) {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Answer {
                username: String,
                secret: String,
            }
            let out = match self.run_helper(&helper, "get", key.as_bytes()) {
                Ok(out) => out,
                // Helpers answer "credentials not found in native keychain" and fail.
                Err(DistributionError::Credentials(m)) if m.contains("not found") => {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let a: Answer = serde_json::from_slice(&out)
                .map_err(|e| cred_err(format!("docker-credential-{helper} answered badly: {e}")))?;
            return Ok(Some(if a.username == "<token>" {
                AuthConfig {
                    identity_token: a.secret,
                    server_address: key,
                    ..Default::default()
                }
            } else {
                AuthConfig {
                    username: a.username,
                    password: a.secret,
                    server_address: key,
                    ..Default::default()
                }
            }));
        }
        use docker_credential::{CredentialRetrievalError as E, DockerCredential};
        match docker_credential::get_credential_from_reader(data.as_slice(), &key) {
            Ok(DockerCredential::UsernamePassword(username, password)) => Ok(Some(AuthConfig {
                username,
                password,
                server_address: key,
                ..Default::default()
            })),
            Ok(DockerCredential::IdentityToken(token)) => Ok(Some(AuthConfig {
                identity_token: token,
                server_address: key,
                ..Default::default()
            })),
            Err(E::NoCredentialConfigured) => Ok(None),
            Err(e) => Err(cred_err(format!(
                "{} for {key}: {}",
                path.display(),
                e.to_string().to_lowercase()
            ))),
        }
    }

    /// Stores `auth` for its server: through the configured helper, else in `auths`
    /// (as `auth: base64(user:password)`, the way the docker CLI writes it).
    pub fn store(&self, auth: &AuthConfig) -> Result<(), DistributionError> {
        let key = config_key(&auth.server_address);
        let mut config = self.read()?;
        if let Some(helper) = Self::helper(&config, &key) {
            let (user, secret) = if auth.identity_token.is_empty() {
                auth.user_password()
                    .ok_or_else(|| cred_err("no username and password to store"))?
            } else {
                ("<token>".to_string(), auth.identity_token.clone())
            };
            let body = serde_json::json!({"ServerURL": key, "Username": user, "Secret": secret});
            self.run_helper(&helper, "store", body.to_string().as_bytes())?;
            // The helper holds the secret now; an old plain entry must not shadow it.
            if let Some(auths) = config.get_mut("auths").and_then(|a| a.as_object_mut())
                && auths.remove(&key).is_some()
            {
                self.write(&config)?;
            }
            return Ok(());
        }
        let mut entry = BTreeMap::new();
        if auth.identity_token.is_empty() {
            let (user, password) = auth
                .user_password()
                .ok_or_else(|| cred_err("no username and password to store"))?;
            entry.insert("auth", STANDARD.encode(format!("{user}:{password}")));
        } else {
            entry.insert("identitytoken", auth.identity_token.clone());
        }
        let auths = config
            .entry("auths")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if !auths.is_object() {
            *auths = serde_json::Value::Object(Default::default());
        }
        if let Some(map) = auths.as_object_mut() {
            map.insert(
                key,
                serde_json::to_value(entry).map_err(|e| cred_err(e.to_string()))?,
            );
        }
        self.write(&config)
    }

    /// Removes the credentials for `registry`; returns whether there were any.
    pub fn erase(&self, registry: &str) -> Result<bool, DistributionError> {
        let key = config_key(registry);
        let mut config = self.read()?;
        let mut found = false;
        if let Some(auths) = config.get_mut("auths").and_then(|a| a.as_object_mut()) {
            let host = registry_host(&key);
            let keys: Vec<String> = auths
                .keys()
                .filter(|k| **k == key || registry_host(k) == host)
                .cloned()
                .collect();
            for k in keys {
                auths.remove(&k);
                found = true;
            }
        }
        if found {
            self.write(&config)?;
        }
        if let Some(helper) = Self::helper(&config, &key) {
            found |= self.run_helper(&helper, "erase", key.as_bytes()).is_ok();
        }
        Ok(found)
    }
}

fn run_helper(program: &Path, verb: &str, input: &[u8]) -> Result<Vec<u8>, DistributionError> {
    let program = program.display().to_string();
    let mut child = Command::new(&program)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| cred_err(format!("running {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| cred_err(format!("writing to {program}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| cred_err(format!("running {program}: {e}")))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        return Err(cred_err(format!("{program} {verb}: {msg}")));
    }
    Ok(out.stdout)
}

/// One `WWW-Authenticate` challenge: the scheme (lowercase) and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// Parses `Bearer realm="https://x/token",service="reg",scope="a:b:pull"`.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.is_empty() {
            return None;
        }
        let mut params = BTreeMap::new();
        let mut rest = rest.trim();
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=')?;
            let key = key.trim().to_ascii_lowercase();
            let after = after.trim_start();
            let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &quoted[end?..])
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_string(), &after[end..])
            };
            params.insert(key, value);
            rest = next.trim_start().trim_start_matches(',').trim_start();
        }
        Some(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_in_every_encoding() {
        let auth = AuthConfig::basic("127.0.0.1:5000", "u", "p");
        let back = AuthConfig::from_header(&auth.to_header()).unwrap().unwrap();
        assert_eq!(back, auth);
        let json = r#"{"username":"u","password":"p?>","serveraddress":"r"}"#;
        for enc in [
            URL_SAFE.encode(json),
            URL_SAFE_NO_PAD.encode(json),
            STANDARD.encode(json),
        ] {
            let a = AuthConfig::from_header(&enc).unwrap().unwrap();
            assert_eq!(a.user_password().unwrap(), ("u".into(), "p?>".into()));
        }
        assert!(AuthConfig::from_header("").unwrap().is_none());
        assert!(
            AuthConfig::from_header(&URL_SAFE.encode("{}"))
                .unwrap()
                .is_none()
        );
        assert!(AuthConfig::from_header("!!!").is_err());
        let a = AuthConfig {
            auth: STANDARD.encode("x:y:z"),
            ..Default::default()
        };
        assert_eq!(a.user_password().unwrap(), ("x".into(), "y:z".into()));
        assert!(!format!("{auth:?}").contains("\"p\""));
    }

    #[test]
    fn registries_map_to_config_keys() {
        assert_eq!(config_key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(config_key(""), DOCKER_HUB_KEY);
        assert_eq!(config_key("https://index.docker.io/v1/"), DOCKER_HUB_KEY);
        assert_eq!(config_key("http://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
        assert_eq!(config_key("localhost:5000"), "localhost:5000");
    }

    #[test]
    fn credentials_are_stored_read_and_erased() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{"other:1":{"auth":"eDp5"}},"HttpHeaders":{"X":"y"}}"#,
        )
        .unwrap();
        let store = CredentialStore::at(dir.path());
        assert!(store.get("127.0.0.1:5000").unwrap().is_none());
        store
            .store(&AuthConfig::basic("http://127.0.0.1:5000", "me", "secret"))
            .unwrap();
        let got = store.get("127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(got.user_password().unwrap(), ("me".into(), "secret".into()));
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(store.path()).unwrap()).unwrap();
        assert_eq!(raw["auths"]["127.0.0.1:5000"]["auth"], "bWU6c2VjcmV0");
        assert_eq!(raw["HttpHeaders"]["X"], "y");
        assert_eq!(raw["auths"]["other:1"]["auth"], "eDp5");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(store.erase("127.0.0.1:5000").unwrap());
        assert!(!store.erase("127.0.0.1:5000").unwrap());
        assert!(store.get("127.0.0.1:5000").unwrap().is_none());
        assert!(store.get("other:1").unwrap().is_some());
    }

    #[test]
    fn credential_helpers_are_asked_first() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        // A helper keeping one JSON file per server, as the real ones keep a keychain.
        let script = format!(
            r#"#!/bin/sh
read -r input
store={}/secrets
mkdir -p "$store"
case "$1" in
  store) server=$(printf '%s' "$input" | sed 's/.*"ServerURL":"\([^"]*\)".*/\1/')
         printf '%s' "$input" > "$store/$(printf '%s' "$server" | tr '/:' '__')";;
  get) f="$store/$(printf '%s' "$input" | tr '/:' '__')"
       [ -f "$f" ] || {{ echo "credentials not found in native keychain"; exit 1; }}
       cat "$f";;
  erase) rm "$store/$(printf '%s' "$input" | tr '/:' '__')";;
esac
"#,
            dir.path().display()
        );
        let helper = bin.join("docker-credential-wharftest");
        std::fs::write(&helper, script).unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();

        let conf = dir.path().join("conf");
        std::fs::create_dir(&conf).unwrap();
        std::fs::write(
            conf.join("config.json"),
            r#"{"credHelpers":{"reg.test:5000":"wharftest"},"auths":{"reg.test:5000":{}}}"#,
        )
        .unwrap();
        let store = CredentialStore::at(&conf).with_helper_dir(&bin);
        assert!(store.get("reg.test:5000").unwrap().is_none());
        store
            .store(&AuthConfig::basic("reg.test:5000", "bob", "pw"))
            .unwrap();
        let got = store.get("reg.test:5000").unwrap().unwrap();
        assert_eq!(got.user_password().unwrap(), ("bob".into(), "pw".into()));
        // The secret is with the helper, not in the file; the stale entry is gone.
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(
            !text.contains("pw") && !text.contains("auths\":{\"reg"),
            "{text}"
        );
        // Other registries are not the helper's.
        assert!(store.get("other:1").unwrap().is_none());
        assert!(store.erase("reg.test:5000").unwrap());
        assert!(store.get("reg.test:5000").unwrap().is_none());

        // credsStore takes every registry.
        std::fs::write(conf.join("config.json"), r#"{"credsStore":"wharftest"}"#).unwrap();
        store
            .store(&AuthConfig::basic("other:1", "carol", "pw2"))
            .unwrap();
        let got = store.get("other:1").unwrap().unwrap();
        assert_eq!(got.user_password().unwrap(), ("carol".into(), "pw2".into()));
    }

    #[test]
    fn challenges_parse() {
        let c = Challenge::parse(
            r#"Bearer realm="http://127.0.0.1:1/token",service="reg",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "http://127.0.0.1:1/token");
        assert_eq!(c.params["service"], "reg");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let c = Challenge::parse(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "Registry Realm");
        assert!(Challenge::parse("").is_none());
    }
}
