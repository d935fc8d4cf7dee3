//! Registry verbs: `pull`, `push`, `login`, `logout`. Credentials come from Docker's
//! config.json (see `credentials`) and go to the daemon in `X-Registry-Auth`.

use std::io::{BufRead, Read, Write};

use hyper::Method;

use crate::client::{self, Client, ClientError, Query, seg};
use crate::credentials::{self, CredentialsError, Store};
use crate::format;
use crate::opts::{LoginArgs, LogoutArgs, PullArgs, PushArgs};
use crate::progress::{self, Display, ProgressError};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Progress(#[from] ProgressError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("{0}")]
    Usage(String),
    #[error("reading {0}")]
    Read(&'static str, #[source] std::io::Error),
}

impl RegistryError {
    pub fn exit_code(&self) -> u8 {
        1
    }

    /// Whether the daemon said it (printed without a `wharf:` prefix, as docker does).
    pub fn said_by_daemon(&self) -> bool {
        matches!(
            self,
            RegistryError::Client(ClientError::Daemon { .. }) | RegistryError::Progress(_)
        )
    }
}

type Result<T> = std::result::Result<T, RegistryError>;

/// The fully qualified form: `busybox` → `docker.io/library/busybox`.
pub fn qualified(name: &str) -> String {
    if credentials::registry_of(name) != "docker.io" {
        name.to_string()
    } else if let Some(rest) = name.strip_prefix("docker.io/") {
        qualified(rest)
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    }
}

/// The `X-Registry-Auth` header for the registry of `name`, when credentials are stored.
fn auth_header(name: &str) -> Result<Vec<(&'static str, String)>> {
    let registry = credentials::registry_of(name);
    Ok(Store::default_location()
        .get(&registry)?
        .map(|c| vec![("X-Registry-Auth", credentials::header(&registry, &c))])
        .unwrap_or_default())
}

/// How a pull shows itself.
#[derive(Debug, Clone, Default)]
pub struct PullOpts {
    pub quiet: bool,
    /// `run`'s pull: progress on stderr, no final reference line.
    pub to_stderr: bool,
    pub platform: Option<String>,
    pub all_tags: bool,
}

pub async fn pull(client: &Client, image: &str, o: &PullOpts) -> Result<()> {
    let (name, tag, digest) = format::split_ref(image);
    if o.all_tags && (tag.is_some() || digest.is_some()) {
        return Err(RegistryError::Usage(
            "tag can't be used with --all-tags/-a".into(),
        ));
    }
    let api_tag = if o.all_tags {
        None
    } else {
        Some(
            digest
                .clone()
                .or(tag.clone())
                .unwrap_or_else(|| "latest".into()),
        )
    };
    if !o.all_tags && tag.is_none() && digest.is_none() && !o.quiet && !o.to_stderr {
        outln!("Using default tag: latest");
    }
    let path = Query::new()
        .push("fromImage", &name)
        .opt("tag", api_tag.as_deref())
        .opt("platform", o.platform.as_deref().filter(|p| !p.is_empty()))
        .path("/images/create");
    let headers = auth_header(&name)?;
    let resp = client
        .send_with(Method::POST, &path, client::empty(), None, &headers)
        .await?;
    let mut display = Display::new(o.quiet, o.to_stderr);
    progress::messages(resp.into_body(), |v| display.show(v)).await?;
    display.finish();
    if !o.to_stderr {
        let full = match (digest, api_tag) {
            (Some(d), _) => format!("{}@{d}", qualified(&name)),
            (None, Some(t)) => format!("{}:{t}", qualified(&name)),
            (None, None) => qualified(&name),
        };
        outln!("{full}");
    }
    Ok(())
}

pub async fn pull_cmd(client: &Client, a: PullArgs) -> Result<u8> {
    let o = PullOpts {
        quiet: a.quiet,
        to_stderr: false,
        platform: a.platform,
        all_tags: a.all_tags,
    };
    pull(client, &a.image, &o).await?;
    Ok(0)
}

pub async fn push_cmd(client: &Client, a: PushArgs) -> Result<u8> {
    let (name, tag, digest) = format::split_ref(&a.image);
    if digest.is_some() {
        return Err(RegistryError::Usage(format!(
            "cannot push a digest reference: {}",
            a.image
        )));
    }
    if a.all_tags && tag.is_some() {
        return Err(RegistryError::Usage(
            "tag can't be used with --all-tags/-a".into(),
        ));
    }
    let tag = match tag {
        Some(t) => Some(t),
        None if a.all_tags => None,
        None => {
            if !a.quiet {
                outln!("Using default tag: latest");
            }
            Some("latest".to_string())
        }
    };
    let path = Query::new()
        .opt("tag", tag.as_deref())
        .opt("compression", a.compression.as_deref())
        .path(&format!("/images/{}/push", seg(&name)));
    let headers = auth_header(&name)?;
    let resp = client
        .send_with(Method::POST, &path, client::empty(), None, &headers)
        .await?;
    let mut display = Display::new(a.quiet, false);
    progress::messages(resp.into_body(), |v| display.show(v)).await?;
    display.finish();
    if a.quiet {
        match tag {
            Some(t) => outln!("{}:{t}", qualified(&name)),
            None => outln!("{}", qualified(&name)),
        }
    }
    Ok(0)
}

/// Reads a line from the terminal; without echo for passwords.
fn prompt(label: &str, echo: bool) -> Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let _ = write!(std::io::stderr(), "{label}");
    let _ = std::io::stderr().flush();
    let stdin = std::io::stdin();
    let saved = if echo {
        None
    } else {
        tcgetattr(&stdin).ok().inspect(|t| {
            let mut quiet = t.clone();
            quiet.local_modes.remove(LocalModes::ECHO);
            let _ = tcsetattr(&stdin, OptionalActions::Now, &quiet);
        })
    };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(t) = saved {
        let _ = tcsetattr(&stdin, OptionalActions::Now, &t);
        let _ = writeln!(std::io::stderr());
    }
    read.map_err(|e| RegistryError::Read("the terminal", e))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

pub async fn login(client: &Client, a: LoginArgs) -> Result<u8> {
    let server = a
        .server
        .clone()
        .unwrap_or_else(|| credentials::DOCKER_HUB.to_string());
    let mut username = a.username.clone().unwrap_or_default().trim().to_string();
    let mut password = a.password.clone().unwrap_or_default();
    if a.password_stdin {
        if a.password.is_some() {
            return Err(RegistryError::Usage(
                "--password and --password-stdin are mutually exclusive".into(),
            ));
        }
        if username.is_empty() {
            return Err(RegistryError::Usage(
                "Must provide --username with --password-stdin".into(),
            ));
        }
        let mut raw = String::new();
        std::io::stdin()
            .read_to_string(&mut raw)
            .map_err(|e| RegistryError::Read("stdin", e))?;
        password = raw.trim_end_matches(['\n', '\r']).to_string();
    } else if a.password.is_some() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    let interactive = crate::stdio::stdin_is_tty();
    if username.is_empty() || password.is_empty() {
        if !interactive {
            return Err(RegistryError::Usage(
                "Cannot perform an interactive login from a non TTY device".into(),
            ));
        }
        if username.is_empty() {
            username = prompt("Username: ", true)?.trim().to_string();
        }
        if password.is_empty() {
            password = prompt("Password: ", false)?;
        }
        if username.is_empty() || password.is_empty() {
            return Err(RegistryError::Usage(
                "Error: Non-null Username and Password Required".into(),
            ));
        }
    }
    let body = serde_json::json!({
        "username": username,
        "password": password,
        "serveraddress": server,
    });
    let answer: serde_json::Value = client.post("/auth", Some(&body)).await?;
    Store::default_location().store(&server, &username, &password)?;
    outln!("{}", answer["Status"].as_str().unwrap_or("Login Succeeded"));
    Ok(0)
}

pub async fn logout(a: LogoutArgs) -> Result<u8> {
    let server = a
        .server
        .clone()
        .unwrap_or_else(|| credentials::DOCKER_HUB.to_string());
    let shown = credentials::key_of(&server);
    if Store::default_location().erase(&server)? {
        outln!("Removing login credentials for {shown}");
    } else {
        outln!("Not logged in to {shown}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_qualify_as_docker_prints_them() {
        assert_eq!(qualified("busybox"), "docker.io/library/busybox");
        assert_eq!(qualified("me/app"), "docker.io/me/app");
        assert_eq!(qualified("docker.io/busybox"), "docker.io/library/busybox");
        assert_eq!(qualified("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b");
        assert_eq!(qualified("localhost/a"), "localhost/a");
        assert_eq!(qualified("localhost:5000/app"), "localhost:5000/app");
    }
}
