//! The engine side of bench/pull-push.sh: one operation per run, driven by environment
//! variables, ignored by the test suite (it times nothing itself; hyperfine does).
//!
//! WHARF_BENCH_OP=load|pull|push  WHARF_BENCH_ROOT=<dir>  WHARF_BENCH_REF=<reference>
//! WHARF_BENCH_ARCHIVE=<tar> (load)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use wharf_engine::distribution::{CredentialStore, Distribution, LayerCompression};
use wharf_engine::image::ImageStore;
use wharf_engine::meta::Meta;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "driven by bench/pull-push.sh"]
async fn bench_driver() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    let op = var("WHARF_BENCH_OP");
    let root = std::path::PathBuf::from(var("WHARF_BENCH_ROOT"));
    std::fs::create_dir_all(&root).unwrap();
    let meta = Arc::new(Meta::open(&root.join("meta.redb")).unwrap());
    let store = Arc::new(ImageStore::open(&root, meta).unwrap());
    if op == "load" {
        let mut f = std::fs::File::open(var("WHARF_BENCH_ARCHIVE")).unwrap();
        for line in store.load(&mut f).unwrap() {
            println!("{line}");
        }
        return;
    }
    let dist = Distribution::new(store, &root)
        .unwrap()
        .with_credentials(CredentialStore::at(&root.join("docker-config")));
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let reference = var("WHARF_BENCH_REF");
    match op.as_str() {
        "pull" => {
            let r = dist.pull(&reference, None, None, &tx).await.unwrap();
            println!("{} {}", r.reference, r.digest);
        }
        "push" => {
            for r in dist
                .push(&reference, None, None, LayerCompression::Gzip, &tx)
                .await
                .unwrap()
            {
                println!("{}: digest: {} size: {}", r.tag, r.digest, r.size);
            }
        }
        other => panic!("unknown WHARF_BENCH_OP {other}"),
    }
    drop(tx);
    drain.await.unwrap();
}
