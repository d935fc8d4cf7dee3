//! Pull and push against Debian's docker-registry on loopback, as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "images_common/mod.rs"]
mod images_common;

#[path = "distribution_common/mod.rs"]
mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use images_common::{RawTar, busybox_tar, docker_archive};
use wharf_engine::content::Digest;
use wharf_engine::distribution::{DistributionError, LayerCompression, Progress};

fn layer(name: &str, content: &[u8]) -> Vec<u8> {
    RawTar::new()
        .dir("data", 0o755)
        .file(&format!("data/{name}"), content)
        .finish()
}

fn layer_ids(all: &[Progress], status: &str) -> Vec<String> {
    let mut v: Vec<String> = all
        .iter()
        .filter(|p| p.status.as_deref() == Some(status))
        .filter_map(|p| p.id.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn push_then_pull_on_a_clean_root() {
    let reg = Registry::start();
    let name = format!("{}/test/app:v1", reg.addr);

    // Root A: an image of two uncompressed layers, loaded as `docker load` would.
    let a = Root::new();
    let (archive, id) = docker_archive(
        &[layer("one", b"first layer"), layer("two", b"second layer")],
        Some(&name),
    );
    a.store().load(&mut archive.as_slice()).unwrap();
    let dist_a = a.dist();

    let p = Collected::new();
    let pushed = dist_a
        .push(&name, None, None, LayerCompression::Gzip, &p.tx)
        .await
        .unwrap();
    let log = p.finish().await;
    assert_eq!(pushed.len(), 1);
    let digest = pushed[0].digest.clone();
    let st = statuses(&log);
    assert!(
        st.contains(&format!(
            "The push refers to repository [{}/test/app]",
            reg.addr
        )),
        "{st:?}"
    );
    assert_eq!(layer_ids(&log, "Pushed").len(), 2, "{st:?}");
    assert!(
        st.contains(&format!("v1: digest: {digest} size: {}", pushed[0].size)),
        "{st:?}"
    );
    assert!(log.iter().any(|p| p.aux.is_some()));
    // The image now carries the digest it has in the registry.
    let img = a.store().resolve(&name).unwrap();
    assert!(
        img.repo_digests
            .contains(&format!("{}/test/app@{digest}", reg.addr)),
        "{:?}",
        img.repo_digests
    );

    // Pushing again uploads nothing: the registry has every layer.
    let p = Collected::new();
    let again = dist_a
        .push(&name, None, None, LayerCompression::Gzip, &p.tx)
        .await
        .unwrap();
    let log = p.finish().await;
    assert_eq!(again[0].digest, digest);
    assert_eq!(layer_ids(&log, "Layer already exists").len(), 2);
    assert!(layer_ids(&log, "Pushed").is_empty());

    // Pulling it back where it came from downloads nothing: the image is here.
    let p = Collected::new();
    let back = dist_a.pull(&name, None, None, &p.tx).await.unwrap();
    let log = p.finish().await;
    assert_eq!(back.image.id, id);
    assert!(!back.updated);
    assert_eq!(layer_ids(&log, "Already exists").len(), 2);
    assert!(!statuses(&log).iter().any(|s| s == "Downloading"));

    // Root B: a clean pull gives the same image id and digest, unpacked.
    let b = Root::new();
    let dist_b = b.dist();
    let p = Collected::new();
    let pulled = dist_b.pull(&name, None, None, &p.tx).await.unwrap();
    let log = p.finish().await;
    assert_eq!(pulled.image.id, id);
    assert_eq!(pulled.digest, digest);
    assert!(pulled.updated);
    let st = statuses(&log);
    assert_eq!(st.first().unwrap(), "Pulling from test/app");
    assert!(st.contains(&format!("Digest: {digest}")), "{st:?}");
    assert!(
        st.contains(&format!(
            "Status: Downloaded newer image for {}/test/app:v1",
            reg.addr
        )),
        "{st:?}"
    );
    assert_eq!(layer_ids(&log, "Pull complete").len(), 2);
    assert!(log.iter().any(|p| {
        p.status.as_deref() == Some("Downloading")
            && p.progress_detail
                .as_ref()
                .is_some_and(|d| d.total.is_some())
    }));
    let image = b.store().resolve(&name).unwrap();
    assert_eq!(image.id, id);
    let dirs = b.store().lower_dirs(&image).unwrap();
    assert_eq!(dirs.len(), 2);
    assert_eq!(
        std::fs::read(dirs[0].join("data/two")).unwrap(),
        b"second layer"
    );
    assert_eq!(
        std::fs::read(dirs[1].join("data/one")).unwrap(),
        b"first layer"
    );
    let by_digest = b
        .store()
        .resolve(&format!("{}/test/app@{digest}", reg.addr))
        .unwrap();
    assert_eq!(by_digest.id, id);
    assert!(b.state()[4].is_empty(), "the pull's lease is gone");

    // Pulling again finds everything.
    let p = Collected::new();
    let again = dist_b.pull(&name, None, None, &p.tx).await.unwrap();
    let log = p.finish().await;
    assert!(!again.updated);
    assert_eq!(layer_ids(&log, "Already exists").len(), 2);
    assert!(statuses(&log).contains(&format!(
        "Status: Image is up to date for {}/test/app:v1",
        reg.addr
    )));
    // By digest too.
    let p = Collected::new();
    let r = dist_b
        .pull(
            &format!("{}/test/app@{digest}", reg.addr),
            None,
            None,
            &p.tx,
        )
        .await
        .unwrap();
    p.finish().await;
    assert_eq!(r.image.id, id);

    // B pushes the pulled image to another repository: the blobs are mounted, not sent, and
    // the manifest is byte for byte the same.
    let copy = format!("{}/test/copy:v1", reg.addr);
    b.store().tag(&name, &copy).unwrap();
    let p = Collected::new();
    let pushed_copy = dist_b
        .push(&copy, None, None, LayerCompression::Gzip, &p.tx)
        .await
        .unwrap();
    let log = p.finish().await;
    assert_eq!(pushed_copy[0].digest, digest);
    assert_eq!(
        layer_ids(&log, "Mounted from test/app").len(),
        2,
        "{:?}",
        statuses(&log)
    );

    // skopeo reads what we pushed.
    if have("skopeo") {
        let out = run(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{name}"),
        ]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["Digest"], digest.as_str());
        assert_eq!(v["Layers"].as_array().unwrap().len(), 2);
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("skopeo").args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{name}"),
            &format!("oci:{}:v1", dir.path().join("layout").display()),
        ]));
        // skopeo checked every digest; the layout loads back here as the same image.
        let mut tar = tar::Builder::new(Vec::new());
        tar.append_dir_all(".", dir.path().join("layout")).unwrap();
        let c = Root::new();
        c.store()
            .load(&mut tar.into_inner().unwrap().as_slice())
            .unwrap();
        assert!(c.store().list().unwrap().iter().any(|i| i.id == id));
    } else {
        eprintln!("skipping skopeo checks: skopeo not installed");
    }

    // zstd on request: the manifest says so and the image pulls back the same.
    let z = format!("{}/test/zstd:v1", reg.addr);
    a.store().tag(&name, &z).unwrap();
    let p = Collected::new();
    let pushed_z = dist_a
        .push(&z, None, None, LayerCompression::Zstd, &p.tx)
        .await
        .unwrap();
    p.finish().await;
    let c = Root::new();
    let p = Collected::new();
    let pulled_z = c.dist().pull(&z, None, None, &p.tx).await.unwrap();
    p.finish().await;
    assert_eq!(pulled_z.image.id, id);
    assert_eq!(pulled_z.digest, pushed_z[0].digest);
    let manifest = c
        .store()
        .resolve(&z)
        .map(|i| i.manifest_digest().to_string())
        .unwrap();
    let raw = std::fs::read(
        c.path()
            .join("content/blobs/sha256")
            .join(manifest.trim_start_matches("sha256:")),
    )
    .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    for l in m["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
    }

    // A real rootfs: busybox pushed and pulled runs its files from the snapshot.
    if let Some(tar) = busybox_tar() {
        let bb = format!("{}/library/busybox:latest", reg.addr);
        let mut f = std::fs::File::open(tar).unwrap();
        let imported = a.store().import(&mut f, &[], Some(&bb), None).unwrap();
        let p = Collected::new();
        dist_a
            .push(&bb, None, None, LayerCompression::Gzip, &p.tx)
            .await
            .unwrap();
        p.finish().await;
        let p = Collected::new();
        let got = b.dist().pull(&bb, None, None, &p.tx).await.unwrap();
        p.finish().await;
        assert_eq!(got.image.id, imported.id);
        let dirs = b.store().lower_dirs(&got.image).unwrap();
        assert!(dirs[0].join("bin/busybox").is_file());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_arch_index_picks_the_platform() {
    let reg = Registry::start();
    let (amd_m, amd_c, _, amd_len) = put_image(
        &reg.addr,
        "multi",
        None,
        "amd64",
        &[layer("arch", b"amd64")],
    )
    .await;
    let (arm_m, arm_c, _, arm_len) = put_image(
        &reg.addr,
        "multi",
        None,
        "arm64",
        &[layer("arch", b"arm64")],
    )
    .await;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm_m,
             "size": arm_len, "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd_m,
             "size": amd_len, "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    }))
    .unwrap();
    let index_digest = put_manifest(
        &reg.addr,
        "multi",
        "latest",
        "application/vnd.oci.image.index.v1+json",
        &index,
    )
    .await;
    let name = format!("{}/multi", reg.addr);

    let a = Root::new();
    let p = Collected::new();
    let got = a.dist().pull(&name, None, None, &p.tx).await.unwrap();
    p.finish().await;
    assert_eq!(got.image.id, amd_c);
    assert_eq!(got.image.architecture, "amd64");
    assert_eq!(got.digest, index_digest);
    assert_eq!(got.image.manifest_digest(), amd_m);
    let dirs = a.store().lower_dirs(&got.image).unwrap();
    assert_eq!(std::fs::read(dirs[0].join("data/arch")).unwrap(), b"amd64");

    let b = Root::new();
    let p = Collected::new();
    let got = b
        .dist()
        .pull(&name, Some("linux/arm64"), None, &p.tx)
        .await
        .unwrap();
    p.finish().await;
    assert_eq!(got.image.id, arm_c);
    assert_eq!(got.image.architecture, "arm64");

    let before = b.state();
    let p = Collected::new();
    let err = b
        .dist()
        .pull(&name, Some("linux/s390x"), None, &p.tx)
        .await
        .unwrap_err();
    p.finish().await;
    assert_eq!(
        err.to_string(),
        "no matching manifest for linux/s390x in the manifest list entries"
    );
    assert!(matches!(err, DistributionError::NotFound(_)));
    assert_eq!(b.state(), before);

    // `pull -a`: every tag (here the one the index has).
    let c = Root::new();
    let p = Collected::new();
    let all = c
        .dist()
        .pull_all_tags(&name, None, None, &p.tx)
        .await
        .unwrap();
    p.finish().await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].reference, format!("{name}:latest"));
    assert_eq!(all[0].image.id, amd_c);
    let p = Collected::new();
    let err = c
        .dist()
        .pull_all_tags(&format!("{name}:latest"), None, None, &p.tx)
        .await
        .unwrap_err();
    p.finish().await;
    assert!(err.to_string().contains("all-tags"), "{err}");

    let inspect = a.dist().inspect(&name, None).await.unwrap();
    assert_eq!(
        inspect.descriptor.digest.as_deref(),
        Some(index_digest.as_str())
    );
    let mut archs: Vec<String> = inspect
        .platforms
        .iter()
        .filter_map(|p| p.architecture.clone())
        .collect();
    archs.sort();
    assert_eq!(archs, vec!["amd64", "arm64"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn interrupted_pull_resumes_from_verified_blobs() {
    let reg = Registry::start();
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    let (_, _, digests, _) = put_image(
        &reg.addr,
        "resume",
        Some("latest"),
        "amd64",
        &[
            layer("a", b"small a"),
            layer("big", &big),
            layer("b", b"small b"),
        ],
    )
    .await;
    let release = Arc::new(AtomicBool::new(false));
    let proxy = stalling_proxy(reg.addr.clone(), digests[1].clone(), release.clone());
    // The proxy is another loopback registry name for the same storage.
    let via_proxy = format!("{}/resume:latest", proxy.addr);

    let mut root = Root::new();
    let dist = Arc::new(root.dist());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Progress>(1024);
    let d = dist.clone();
    let task = tokio::spawn(async move { d.pull(&via_proxy, None, None, &tx).await });
    let small: Vec<String> = [&digests[0], &digests[2]]
        .iter()
        .map(|d| Progress::short_id(d))
        .collect();
    let mut complete = Vec::new();
    while complete.len() < 2 {
        let p = rx
            .recv()
            .await
            .expect("the pull ended before the small layers");
        if p.status.as_deref() == Some("Pull complete")
            && let Some(id) = p.id
        {
            assert!(small.contains(&id), "only the small layers can complete");
            complete.push(id);
        }
    }
    // Interrupt the pull as a dropped request (or a killed daemon) does.
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    drop(rx);
    release.store(true, Ordering::SeqCst);
    drop(dist);

    // A restart collects garbage: the verified blobs stay (leased), nothing is tagged, and
    // no partial blob is visible.
    root.reopen();
    assert!(root.store().list().unwrap().is_empty());
    let blobs = names(&root.path().join("content/blobs/sha256"));
    for d in [&digests[0], &digests[2]] {
        assert!(blobs.contains(&d.trim_start_matches("sha256:").to_string()));
    }
    assert!(!blobs.contains(&digests[1].trim_start_matches("sha256:").to_string()));
    for hex in &blobs {
        let data = std::fs::read(root.path().join("content/blobs/sha256").join(hex)).unwrap();
        assert_eq!(
            Digest::of(&data).hex(),
            hex,
            "every visible blob is complete"
        );
    }
    assert_eq!(names(&root.path().join("content/leases")).len(), 1);

    // Pulling again (from the registry itself) downloads only the missing layer.
    let p = Collected::new();
    let got = root
        .dist()
        .pull(&format!("{}/resume:latest", reg.addr), None, None, &p.tx)
        .await
        .unwrap();
    let log = p.finish().await;
    let mut reused = layer_ids(&log, "Already exists");
    reused.sort();
    let mut want = small.clone();
    want.sort();
    assert_eq!(reused, want);
    assert_eq!(
        layer_ids(&log, "Pull complete"),
        vec![Progress::short_id(&digests[1])]
    );
    let dirs = root.store().lower_dirs(&got.image).unwrap();
    assert_eq!(std::fs::read(dirs[1].join("data/big")).unwrap(), big);
    assert!(names(&root.path().join("content/leases")).is_empty());
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_content_is_refused_and_the_store_is_unchanged() {
    let reg = Registry::start();
    let root = Root::new();
    let dist = root.dist();
    // Something in the store already, so "unchanged" means more than "empty".
    put_image(
        &reg.addr,
        "good",
        Some("v1"),
        "amd64",
        &[layer("g", b"good")],
    )
    .await;
    let p = Collected::new();
    dist.pull(&format!("{}/good:v1", reg.addr), None, None, &p.tx)
        .await
        .unwrap();
    p.finish().await;
    let before = root.state();

    let pull = |name: String| {
        let dist = &dist;
        async move {
            let p = Collected::new();
            let r = dist.pull(&name, None, None, &p.tx).await;
            p.finish().await;
            r.unwrap_err()
        }
    };

    // A layer whose bytes do not match its digest (same length).
    let (_, _, digests, _) = put_image(
        &reg.addr,
        "baddigest",
        Some("v1"),
        "amd64",
        &[layer("x", b"fine"), layer("y", b"to be damaged")],
    )
    .await;
    let path = reg.blob_data(&digests[1]);
    let mut data = std::fs::read(&path).unwrap();
    let n = data.len();
    data[n / 2] ^= 0xff;
    std::fs::write(&path, &data).unwrap();
    let err = pull(format!("{}/baddigest:v1", reg.addr)).await;
    assert!(
        err.to_string()
            .contains(&format!("blob {} does not match its digest", digests[1])),
        "{err}"
    );
    assert_eq!(root.state(), before);

    // A truncated layer.
    let (_, _, digests, _) = put_image(
        &reg.addr,
        "truncated",
        Some("v1"),
        "amd64",
        &[layer("z", &vec![7u8; 100_000])],
    )
    .await;
    let path = reg.blob_data(&digests[0]);
    let data = std::fs::read(&path).unwrap();
    std::fs::write(&path, &data[..data.len() / 2]).unwrap();
    let err = pull(format!("{}/truncated:v1", reg.addr)).await;
    assert!(
        err.to_string()
            .contains(&format!("blob {} is truncated", digests[0])),
        "{err}"
    );
    assert!(err.is_bad_content());
    assert_eq!(root.state(), before);

    // A config that is not JSON.
    let config = put_blob(&reg.addr, "notjson", b"this is not json").await;
    let l = images_common::gzip(&layer("q", b"q"));
    let ld = put_blob(&reg.addr, "notjson", &l).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": 16},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": ld, "size": l.len()}],
    }))
    .unwrap();
    put_manifest(
        &reg.addr,
        "notjson",
        "v1",
        "application/vnd.oci.image.manifest.v1+json",
        &manifest,
    )
    .await;
    let err = pull(format!("{}/notjson:v1", reg.addr)).await;
    assert!(
        err.to_string()
            .contains(&format!("image config {config} is not JSON")),
        "{err}"
    );
    assert_eq!(root.state(), before);

    // A manifest over 4 MiB, from a registry that sends one (ours refuses to store it).
    let huge = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": 16},
        "layers": [],
        "annotations": {"padding": "x".repeat(5 << 20)},
    }))
    .unwrap();
    let huge_digest = Digest::of(&huge).to_string();
    let fake = HttpServer::start(move |req| {
        if req.path == "/v2/" {
            return Response::new(200, "{}");
        }
        if req.path.ends_with("/manifests/v1") {
            return Response::new(200, huge.clone())
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .header("Docker-Content-Digest", &huge_digest);
        }
        Response::new(404, "{}")
    });
    let err = pull(format!("{}/huge:v1", fake.addr)).await;
    assert!(
        err.to_string().contains("over the 4194304-byte limit"),
        "{err}"
    );
    assert_eq!(root.state(), before);

    // An unknown image says so.
    let err = pull(format!("{}/nothing:v1", reg.addr)).await;
    assert!(matches!(err, DistributionError::NotFound(_)), "{err:?}");
    assert!(err.to_string().contains("manifest unknown"), "{err}");
    assert_eq!(root.state(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_connection_resumes_the_download() {
    let reg = Registry::start();
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (_, _, digests, _) = put_image(
        &reg.addr,
        "flaky",
        Some("v1"),
        "amd64",
        &[layer("big", &big)],
    )
    .await;
    let blob = digests[0].clone();
    let cut = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (upstream, c, seen) = (reg.addr.clone(), cut.clone(), requests.clone());
    let proxy = HttpServer::start(move |req| {
        let mut res = forward(&upstream, req);
        if req.method == "GET" && req.path.ends_with(&blob) {
            seen.lock()
                .unwrap()
                .push(req.header("range").unwrap_or("").to_string());
            if !c.swap(true, Ordering::SeqCst) {
                // The first response claims the whole blob and stops half way.
                let full = res.body.len() as u64;
                res.body.truncate(res.body.len() / 2);
                res.claimed_length = Some(full);
            }
        }
        res
    });
    let root = Root::new();
    let p = Collected::new();
    let got = root
        .dist()
        .pull(&format!("{}/flaky:v1", proxy.addr), None, None, &p.tx)
        .await
        .unwrap();
    p.finish().await;
    let dirs = root.store().lower_dirs(&got.image).unwrap();
    assert_eq!(std::fs::read(dirs[0].join("data/big")).unwrap(), big);
    let seen = requests.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    // The first request asks for the whole blob (as a range from byte 0, so that the client
    // hands over its stream unverified and the blob is hashed once).
    assert!(seen[0].is_empty() || seen[0] == "bytes=0-", "{seen:?}");
    assert!(seen[1].starts_with("bytes="), "{seen:?}");
    assert_ne!(
        seen[1], "bytes=0-",
        "the retry starts where the first response stopped"
    );
}
