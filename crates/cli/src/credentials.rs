//! Registry credentials in Docker's `config.json` (`$DOCKER_CONFIG`, else `~/.docker`), as
//! the docker CLI keeps them: `auths` entries (`auth: base64(user:password)`), or a
//! `docker-credential-<helper>` named by `credHelpers` for the registry or by `credsStore`.
//!
//! The CLI owns this file, not the daemon: credentials go to the daemon with each request
//! in `X-Registry-Auth`, as docker sends them. The CLI shares only `wharf-api` (no I/O) with
//! the daemon, and this is all it needs of the engine's fuller credential store.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde_json::{Map, Value};

/// The key Docker keeps Docker Hub credentials under.
pub const DOCKER_HUB: &str = "https://index.docker.io/v1/";

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("running docker-credential-{helper}")]
    Helper {
        helper: String,
        #[source]
        source: std::io::Error,
    },
    #[error("docker-credential-{helper} {verb}: {message}")]
    HelperFailed {
        helper: String,
        verb: &'static str,
        message: String,
    },
}

type Result<T> = std::result::Result<T, CredentialsError>;

/// What a registry login holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    pub identity_token: String,
}

/// The registry host of a reference's name: `busybox` → `docker.io`,
/// `127.0.0.1:5000/a/b` → `127.0.0.1:5000`.
pub fn registry_of(name: &str) -> String {
    let first = name.split('/').next().unwrap_or_default();
    if name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost") {
        first.to_string()
    } else {
        "docker.io".into()
    }
}

/// `https://h:5000/v2/` → `h:5000`; every name of Docker Hub → `docker.io`.
pub fn host_of(server: &str) -> String {
    let s = server.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    match s.split('/').next().unwrap_or_default() {
        "" | "docker.io" | "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

/// The key config.json files a registry under: Docker Hub's URL, else the host.
pub fn key_of(server: &str) -> String {
    match host_of(server).as_str() {
        "docker.io" => DOCKER_HUB.into(),
        h => h.to_string(),
    }
}

/// The `X-Registry-Auth` value docker sends for these credentials.
pub fn header(server: &str, c: &Credentials) -> String {
    let mut m = Map::new();
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            m.insert(k.into(), Value::String(v.into()));
        }
    };
    put("username", &c.username);
    put("password", &c.password);
    put("identitytoken", &c.identity_token);
    put("serveraddress", &key_of(server));
    URL_SAFE.encode(Value::Object(m).to_string())
}

pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn default_location() -> Store {
        let dir = std::env::var_os("DOCKER_CONFIG")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))
            .unwrap_or_else(|| PathBuf::from("/root/.docker"));
        Store { dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    fn read(&self) -> Result<Map<String, Value>> {
        let path = self.path();
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
            Err(source) => {
                return Err(CredentialsError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        if data.iter().all(u8::is_ascii_whitespace) {
            return Ok(Map::new());
        }
        serde_json::from_slice(&data).map_err(|source| CredentialsError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Replaces config.json whole (temp file, fsync, rename), readable by its owner only.
    fn write(&self, config: &Map<String, Value>) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.path();
        let tmp = self
            .dir
            .join(format!(".config.json.{}", std::process::id()));
        let result = (|| {
            std::fs::create_dir_all(&self.dir)?;
            let mut f = std::fs::File::options()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            let mut data = serde_json::to_vec_pretty(config).map_err(std::io::Error::other)?;
            data.push(b'\n');
            f.write_all(&data)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(|source| CredentialsError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// The helper that keeps `key`'s secrets: `credHelpers` for the registry, else
    /// `credsStore`.
    fn helper(config: &Map<String, Value>, key: &str) -> Option<String> {
        let host = host_of(key);
        let named = config
            .get("credHelpers")
            .and_then(Value::as_object)
            .and_then(|h| h.iter().find(|(k, _)| host_of(k) == host))
            .and_then(|(_, v)| v.as_str());
        named
            .or_else(|| config.get("credsStore").and_then(Value::as_str))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// The stored credentials for `server`, if any.
    pub fn get(&self, server: &str) -> Result<Option<Credentials>> {
        let key = key_of(server);
        let config = self.read()?;
        if let Some(helper) = Self::helper(&config, &key) {
            let out = match run_helper(&helper, "get", key.as_bytes()) {
                Ok(out) => out,
                // Helpers fail with "credentials not found in native keychain".
                Err(CredentialsError::HelperFailed { message, .. })
                    if message.contains("not found") =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let v: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
            let user = v["Username"].as_str().unwrap_or_default().to_string();
            let secret = v["Secret"].as_str().unwrap_or_default().to_string();
            return Ok(Some(if user == "<token>" {
                Credentials {
                    identity_token: secret,
                    ..Default::default()
                }
            } else {
                Credentials {
                    username: user,
                    password: secret,
                    ..Default::default()
                }
            }));
        }
        let host = host_of(&key);
        let Some(entry) = config
            .get("auths")
            .and_then(Value::as_object)
            .and_then(|a| a.iter().find(|(k, _)| host_of(k) == host))
            .map(|(_, v)| v)
        else {
            return Ok(None);
        };
        let field = |k: &str| entry[k].as_str().unwrap_or_default().to_string();
        let mut c = Credentials {
            username: field("username"),
            password: field("password"),
            identity_token: field("identitytoken"),
        };
        if let Some(text) = STANDARD
            .decode(field("auth").trim())
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            && let Some((u, p)) = text.split_once(':')
        {
            c.username = u.to_string();
            c.password = p.to_string();
        }
        Ok((c != Credentials::default()).then_some(c))
    }

    /// Keeps `username` and `password` for `server`: with the helper, else in `auths`.
    pub fn store(&self, server: &str, username: &str, password: &str) -> Result<()> {
        let key = key_of(server);
        let mut config = self.read()?;
        let auths = config
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        let host = host_of(&key);
        if let Some(a) = auths.as_object_mut() {
            a.retain(|k, _| host_of(k) != host);
        }
        if let Some(helper) = Self::helper(&config, &key) {
            let body =
                serde_json::json!({"ServerURL": key, "Username": username, "Secret": password});
            run_helper(&helper, "store", body.to_string().as_bytes())?;
            // An old plain entry must not stay beside the helper's.
            return self.write(&config);
        }
        if let Some(a) = config.get_mut("auths").and_then(Value::as_object_mut) {
            a.insert(
                key,
                serde_json::json!({ "auth": STANDARD.encode(format!("{username}:{password}")) }),
            );
        }
        self.write(&config)
    }

    /// Forgets `server`'s credentials; whether there were any.
    pub fn erase(&self, server: &str) -> Result<bool> {
        let key = key_of(server);
        let mut config = self.read()?;
        let host = host_of(&key);
        let mut found = false;
        if let Some(a) = config.get_mut("auths").and_then(Value::as_object_mut) {
            let before = a.len();
            a.retain(|k, _| host_of(k) != host);
            found = a.len() != before;
        }
        if found {
            self.write(&config)?;
        }
        if let Some(helper) = Self::helper(&config, &key) {
            found |= run_helper(&helper, "erase", key.as_bytes()).is_ok();
        }
        Ok(found)
    }
}

fn run_helper(helper: &str, verb: &'static str, input: &[u8]) -> Result<Vec<u8>> {
    let spawn_err = |source| CredentialsError::Helper {
        helper: helper.to_string(),
        source,
    };
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        return Err(CredentialsError::HelperFailed {
            helper: helper.to_string(),
            verb,
            message: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_registries() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("library/busybox"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/a/b"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/a"), "localhost");
        assert_eq!(registry_of("reg.example/a"), "reg.example");
        assert_eq!(host_of("https://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
        assert_eq!(key_of("docker.io"), DOCKER_HUB);
        assert_eq!(key_of("https://index.docker.io/v1/"), DOCKER_HUB);
        assert_eq!(key_of("127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[test]
    fn stores_reads_and_erases_as_docker_writes() {
        let dir = std::env::temp_dir().join(format!("wharf-cli-creds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            r#"{"auths":{"http://reg:5000":{"auth":"b2xkOnNlY3JldA=="}},"psFormat":"x"}"#,
        )
        .unwrap();
        let s = Store { dir: dir.clone() };
        assert_eq!(
            s.get("reg:5000").unwrap().unwrap(),
            Credentials {
                username: "old".into(),
                password: "secret".into(),
                ..Default::default()
            }
        );
        s.store("reg:5000", "alice", "pw:with:colons").unwrap();
        let raw: Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(raw["psFormat"], "x", "other settings are kept");
        assert_eq!(
            raw["auths"]["reg:5000"]["auth"],
            STANDARD.encode("alice:pw:with:colons")
        );
        assert!(raw["auths"].get("http://reg:5000").is_none());
        let c = s.get("reg:5000").unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("alice", "pw:with:colons")
        );
        assert!(s.get("other:5000").unwrap().is_none());
        let h: Value =
            serde_json::from_slice(&URL_SAFE.decode(header("reg:5000", &c)).unwrap()).unwrap();
        assert_eq!(h["username"], "alice");
        assert_eq!(h["serveraddress"], "reg:5000");
        assert!(s.erase("reg:5000").unwrap());
        assert!(!s.erase("reg:5000").unwrap());
        assert!(s.get("reg:5000").unwrap().is_none());
        std::fs::write(dir.join("config.json"), "{not json").unwrap();
        assert!(matches!(
            s.get("reg:5000"),
            Err(CredentialsError::Parse { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
