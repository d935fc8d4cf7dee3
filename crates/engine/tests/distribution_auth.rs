//! Registry authentication: htpasswd basic auth and token (bearer) auth with scopes, stored
//! credentials in Docker's config.json format.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "images_common/mod.rs"]
mod images_common;

#[path = "distribution_common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use images_common::{RawTar, docker_archive};
use wharf_engine::distribution::{AuthConfig, DistributionError, LayerCompression};

fn image(root: &Root, name: &str) -> String {
    let l = RawTar::new().file("hello", b"auth test").finish();
    let (archive, id) = docker_archive(&[l], Some(name));
    root.store().load(&mut archive.as_slice()).unwrap();
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_push_login_and_stored_credentials() {
    let reg = Registry::start_htpasswd("alice", "s3cret");
    let name = format!("{}/private/app:v1", reg.addr);
    let a = Root::new();
    let id = image(&a, &name);
    let dist = a.dist();

    // Without credentials the push is refused, and says why.
    let before = a.state();
    let p = Collected::new();
    let err = dist
        .push(&name, None, None, LayerCompression::Gzip, &p.tx)
        .await
        .unwrap_err();
    p.finish().await;
    assert!(matches!(err, DistributionError::Unauthorized(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("authentication required"), "{msg}");
    assert!(msg.contains("log in"), "{msg}");
    assert_eq!(a.state(), before);

    // Wrong credentials do not log in; right ones do.
    let err = dist
        .login(&AuthConfig::basic(&reg.addr, "alice", "wrong"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "login attempt to http://{}/v2/ failed with status: 401 Unauthorized",
            reg.addr
        )
    );
    let good = AuthConfig::basic(&reg.addr, "alice", "s3cret");
    assert_eq!(dist.login(&good).await.unwrap(), "Login Succeeded");

    // Credentials given with the request (as X-Registry-Auth carries them) work.
    let header = AuthConfig::from_header(&good.to_header()).unwrap().unwrap();
    let p = Collected::new();
    let pushed = dist
        .push(&name, None, Some(&header), LayerCompression::Gzip, &p.tx)
        .await
        .unwrap();
    p.finish().await;

    // Stored credentials are used when none are given, and are in Docker's format.
    dist.credentials().store(&good).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dist.credentials().path()).unwrap()).unwrap();
    assert_eq!(
        config["auths"][&reg.addr]["auth"],
        STANDARD.encode("alice:s3cret")
    );
    let b = Root::new();
    let dist_b = b.dist();
    dist_b.credentials().store(&good).unwrap();
    let p = Collected::new();
    let pulled = dist_b.pull(&name, None, None, &p.tx).await.unwrap();
    p.finish().await;
    assert_eq!(pulled.image.id, id);
    assert_eq!(pulled.digest, pushed[0].digest);

    // skopeo (containers/image) reads the file as Docker's auth file.
    if have("skopeo") {
        let out = run(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            "--authfile",
            dist.credentials().path().to_str().unwrap(),
            &format!("docker://{name}"),
        ]));
        assert!(out.contains(&pushed[0].digest), "{out}");
    }
    // The docker CLI finds them to log out, and removes them.
    let docker = ["/usr/local/bin/docker", "/usr/bin/docker"]
        .into_iter()
        .find(|d| Path::new(d).exists());
    if let Some(docker) = docker {
        let dir = dist.credentials().path().parent().unwrap().to_path_buf();
        let out = run(Command::new(docker)
            .env("DOCKER_CONFIG", &dir)
            .args(["logout", &reg.addr]));
        assert!(
            out.contains(&format!("Removing login credentials for {}", reg.addr)),
            "{out}"
        );
        assert!(dist.credentials().get(&reg.addr).unwrap().is_none());
    }
    assert!(!dist.credentials().erase(&reg.addr).unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_token_auth_with_scopes() {
    if !have("openssl") {
        eprintln!("skipping: openssl is needed to sign tokens");
        return;
    }
    let tokens = TokenServer::start();
    let reg = Registry::start_token(&tokens.realm(), &tokens.cert);
    let name = format!("{}/tok/app:v1", reg.addr);
    let a = Root::new();
    let id = image(&a, &name);
    let dist = a.dist();

    // Anonymous tokens grant nothing: push is refused.
    let p = Collected::new();
    let err = dist
        .push(&name, None, None, LayerCompression::Gzip, &p.tx)
        .await
        .unwrap_err();
    p.finish().await;
    assert!(matches!(err, DistributionError::Unauthorized(_)), "{err:?}");

    let alice = AuthConfig::basic(&reg.addr, "alice", "s3cret");
    assert_eq!(dist.login(&alice).await.unwrap(), "Login Succeeded");
    let err = dist
        .login(&AuthConfig::basic(&reg.addr, "alice", "nope"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");

    let p = Collected::new();
    let pushed = dist
        .push(&name, None, Some(&alice), LayerCompression::Gzip, &p.tx)
        .await
        .unwrap();
    p.finish().await;

    // Pull: refused anonymously, fine with a token for alice.
    let b = Root::new();
    let before = b.state();
    let p = Collected::new();
    let err = b.dist().pull(&name, None, None, &p.tx).await.unwrap_err();
    p.finish().await;
    assert!(matches!(err, DistributionError::Unauthorized(_)), "{err:?}");
    assert_eq!(b.state(), before);
    let p = Collected::new();
    let pulled = b
        .dist()
        .pull(&name, None, Some(&alice), &p.tx)
        .await
        .unwrap();
    p.finish().await;
    assert_eq!(pulled.image.id, id);
    assert_eq!(pulled.digest, pushed[0].digest);

    // A push to another repository mounts the layer, with a token for both repositories.
    let copy = format!("{}/tok/copy:v1", reg.addr);
    b.store().tag(&name, &copy).unwrap();
    let p = Collected::new();
    let again = b
        .dist()
        .push(&copy, None, Some(&alice), LayerCompression::Gzip, &p.tx)
        .await
        .unwrap();
    let log = p.finish().await;
    assert_eq!(again[0].digest, pushed[0].digest);
    let st = statuses(&log);
    assert!(st.iter().any(|s| s == "Mounted from tok/app"), "{st:?}");
}
