//! `POST /build` (the legacy builder protocol docker's CLI speaks with `DOCKER_BUILDKIT=0`)
//! and `POST /commit`.

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use tokio::sync::mpsc;
use wharf_engine::ErrorKind;
use wharf_engine::build::BuildError;
use wharf_engine::build::api::{request_from_query, run_request};
use wharf_engine::build::commit::CommitOptions;
use wharf_engine::image::ImageConfig;

use super::Params;
use crate::SharedEngine;
use crate::body::{self, BodyReader};
use crate::error::{ApiError, ApiResult, chain};

pub fn routes() -> Router<SharedEngine> {
    Router::new()
        .route("/build", post(build))
        .route("/commit", post(commit))
}

fn api_error(e: &BuildError) -> ApiError {
    let status = match e.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::NotModified => StatusCode::NOT_MODIFIED,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, chain(e))
}

/// Streams the build's progress as JSON lines while the build runs on a blocking thread.
async fn build(
    State(e): State<SharedEngine>,
    Query(q): Query<Params>,
    headers: HeaderMap,
    req: Request,
) -> ApiResult<Response> {
    let secrets = headers
        .get("X-Wharf-Build-Secrets")
        .and_then(|v| v.to_str().ok());
    // A bad query is refused before anything streams, with the status docker's CLI shows.
    let request = request_from_query(&q.0, secrets).map_err(|e| api_error(&e))?;
    let mut body = BodyReader::new(req.into_body());
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let builder = e.builder().clone();
    tokio::task::spawn_blocking(move || {
        let send = |v: serde_json::Value| {
            let mut line = serde_json::to_vec(&v).unwrap_or_default();
            line.push(b'\n');
            // A client that went away stops reading; the build still finishes and cleans up.
            let _ = tx.blocking_send(Bytes::from(line));
        };
        if let Err(e) = run_request(&builder, &request, &mut body, &send) {
            tracing::debug!("build failed: {}", chain(&e));
        }
        // The client writes its whole body before it reads: take what the build left.
        let _ = std::io::copy(&mut body, &mut std::io::sink());
    });
    let mut resp = body::stream(rx).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// `POST /commit?container=&repo=&tag=&comment=&author=&changes=&pause=`, the body an
/// optional container config to apply.
async fn commit(
    State(e): State<SharedEngine>,
    Query(q): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    let container = q
        .get("container")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("no container given to commit"))?;
    let trimmed = String::from_utf8_lossy(&body);
    let config: Option<ImageConfig> = match trimmed.trim() {
        "" | "null" => None,
        text => Some(
            serde_json::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("invalid config: {e}")))?,
        ),
    };
    let reference = match (q.get("repo").filter(|r| !r.is_empty()), q.get("tag")) {
        (Some(repo), Some(tag)) if !tag.is_empty() => Some(format!("{repo}:{tag}")),
        (Some(repo), _) => Some(repo.to_string()),
        (None, Some(tag)) if !tag.is_empty() => {
            return Err(ApiError::bad_request("a tag needs a repository"));
        }
        _ => None,
    };
    let non_empty = |k: &str| q.get(k).filter(|v| !v.is_empty()).map(str::to_string);
    let opts = CommitOptions {
        reference,
        author: non_empty("author"),
        comment: non_empty("comment"),
        changes: q.all("changes"),
        config,
    };
    let image = e
        .commit(container, opts, q.flag("pause", true))
        .await
        .map_err(|e| api_error(&e))?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "Id": image.id })),
    )
        .into_response())
}
