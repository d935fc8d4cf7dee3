//! `/_ping`, `/version`, `/info`, `/system/df`, `/events`.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use wharf_api::models::{SystemInfo, SystemVersion, SystemVersionComponents};
use wharf_api::{API_VERSION, MIN_API_VERSION};

use crate::SharedEngine;
use crate::error::ApiError;

pub fn routes() -> Router<SharedEngine> {
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/system/df", get(disk_usage))
        .route("/events", get(events))
}

async fn ping() -> Response {
    let mut resp = "OK".into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    resp
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

async fn version() -> Json<SystemVersion> {
    let v = env!("CARGO_PKG_VERSION").to_string();
    let arch = std::env::consts::ARCH
        .replace("x86_64", "amd64")
        .replace("aarch64", "arm64");
    let details = [
        ("ApiVersion", API_VERSION.to_string()),
        ("MinAPIVersion", MIN_API_VERSION.to_string()),
        ("Arch", arch.clone()),
        ("Os", "linux".to_string()),
        ("KernelVersion", kernel_version()),
        ("GoVersion", "n/a (rust)".to_string()),
        ("GitCommit", String::new()),
        ("BuildTime", String::new()),
        ("Experimental", "false".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Json(SystemVersion {
        platform: Some(wharf_api::models::SystemVersionPlatform {
            name: "wharf".into(),
        }),
        components: Some(vec![SystemVersionComponents {
            name: "Engine".into(),
            version: v.clone(),
            details: Some(details),
        }]),
        version: Some(v),
        api_version: Some(API_VERSION.into()),
        min_api_version: Some(MIN_API_VERSION.into()),
        git_commit: Some(String::new()),
        go_version: Some("n/a (rust)".into()),
        os: Some("linux".into()),
        arch: Some(arch),
        kernel_version: Some(kernel_version()),
        experimental: Some(false),
        build_time: Some(String::new()),
    })
}

fn cgroup_version() -> &'static str {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    }
}

async fn info(State(engine): State<SharedEngine>) -> Json<SystemInfo> {
    let (total, running, paused, stopped) = engine.container_counts();
    let images = engine.images.list().map(|l| l.len()).unwrap_or(0);
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<i64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    Json(SystemInfo {
        id: Some(String::new()),
        containers: Some(total as i64),
        containers_running: Some(running as i64),
        containers_paused: Some(paused as i64),
        containers_stopped: Some(stopped as i64),
        images: Some(images as i64),
        driver: Some("overlay2".into()),
        driver_status: Some(vec![vec!["Backing Filesystem".into(), "extfs".into()]]),
        docker_root_dir: Some(engine.cfg.root.display().to_string()),
        memory_limit: Some(true),
        swap_limit: Some(false),
        cpu_cfs_period: Some(true),
        cpu_cfs_quota: Some(true),
        cpu_shares: Some(true),
        pids_limit: Some(true),
        ipv4_forwarding: Some(true),
        debug: Some(false),
        nfd: Some(0),
        n_goroutines: Some(0),
        system_time: Some(wharf_engine::util::now_rfc3339()),
        logging_driver: Some("json-file".into()),
        cgroup_driver: Some(wharf_api::models::SystemInfoCgroupDriverEnum::CGROUPFS),
        cgroup_version: Some(if cgroup_version() == "2" {
            wharf_api::models::SystemInfoCgroupVersionEnum::_2
        } else {
            wharf_api::models::SystemInfoCgroupVersionEnum::_1
        }),
        kernel_version: Some(kernel_version()),
        operating_system: Some("linux".into()),
        os_type: Some("linux".into()),
        architecture: Some(std::env::consts::ARCH.into()),
        ncpu: Some(
            std::thread::available_parallelism()
                .map(|n| n.get() as i64)
                .unwrap_or(1),
        ),
        mem_total: Some(mem_total),
        name: Some(hostname),
        labels: Some(Vec::new()),
        experimental_build: Some(false),
        server_version: Some(env!("CARGO_PKG_VERSION").into()),
        default_runtime: Some("wharf".into()),
        live_restore_enabled: Some(true),
        security_options: Some(vec!["name=seccomp,profile=builtin".into()]),
        warnings: Some(Vec::new()),
        ..Default::default()
    })
}

/// `docker system df`: in the shape API versions below 1.52 use (`LayersSize`, `Images`,
/// `Containers`, `Volumes`, `BuildCache`), which every client wharf negotiates with reads.
/// wharf has no named volumes, and its build cache is layers images keep, counted there.
async fn disk_usage(
    State(engine): State<SharedEngine>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let usage = tokio::task::spawn_blocking(move || engine.disk_usage())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(serde_json::json!({
        "LayersSize": usage.layers_size,
        "Images": usage.images,
        "Containers": usage.containers,
        "Volumes": [],
        "BuildCache": [],
    })))
}

/// The event stream. wharf does not publish events yet: the stream stays open and empty so
/// clients that follow it (compose, `docker events`) work.
async fn events() -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
    tokio::spawn(async move {
        tx.closed().await;
    });
    let mut resp = crate::body::stream(rx).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
