//! `/containers/*`.

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use wharf_api::models::{ContainerCreateBody, ContainerWaitResponse};
use wharf_engine::container::{AttachStreams, LogOptions, WaitCondition};

use super::{Params, json_body};
use crate::error::{ApiError, ApiResult};
use crate::{SharedEngine, body, hijack};

pub fn routes() -> Router<SharedEngine> {
    Router::new()
        .route("/containers/create", post(create))
        .route("/containers/json", get(list))
        .route("/containers/prune", post(prune))
        .route("/containers/{id}/json", get(inspect))
        .route("/containers/{id}/start", post(start))
        .route("/containers/{id}/stop", post(stop))
        .route("/containers/{id}/restart", post(restart))
        .route("/containers/{id}/kill", post(kill))
        .route("/containers/{id}/wait", post(wait))
        .route("/containers/{id}", delete(remove))
        .route("/containers/{id}/logs", get(logs))
        .route("/containers/{id}/attach", post(attach))
        .route("/containers/{id}/resize", post(resize))
        .route("/containers/{id}/pause", post(pause))
        .route("/containers/{id}/unpause", post(unpause))
        .route("/containers/{id}/rename", post(rename))
        .route("/containers/{id}/top", get(top))
        .route("/containers/{id}/stats", get(stats))
}

async fn create(
    State(e): State<SharedEngine>,
    Query(q): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    let spec: ContainerCreateBody = json_body(&body)?;
    let name = q.get("name").filter(|n| !n.is_empty());
    let created = e.create(name, spec).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn list(State(e): State<SharedEngine>, Query(q): Query<Params>) -> ApiResult<Response> {
    let limit = q.int("limit")?.filter(|n| *n > 0).map(|n| n as usize);
    let list = e.list(q.flag("all", false), limit, &q.filters()?)?;
    Ok(Json(list).into_response())
}

async fn inspect(State(e): State<SharedEngine>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(e.inspect(&id)?).into_response())
}

async fn start(State(e): State<SharedEngine>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    e.start(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stop(
    State(e): State<SharedEngine>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    e.stop(&id, q.int("t")?, q.get("signal").filter(|s| !s.is_empty()))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restart(
    State(e): State<SharedEngine>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    e.restart(&id, q.int("t")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn kill(
    State(e): State<SharedEngine>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    e.kill(&id, q.get("signal")).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn wait(
    State(e): State<SharedEngine>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<Response> {
    let condition: WaitCondition = q.get("condition").unwrap_or("").parse()?;
    let done = e.wait(&id, condition)?;
    // The status line goes out at once so clients know the wait is in place; the body follows
    // when the condition holds.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let code = done.await;
        let body = ContainerWaitResponse {
            status_code: code,
            error: None,
        };
        let _ = tx
            .send(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()))
            .await;
    });
    let mut resp = body::stream(rx).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

async fn remove(
    State(e): State<SharedEngine>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    e.remove(&id, q.flag("force", false), q.flag("v", false))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn unix_time(q: &Params, key: &str) -> ApiResult<f64> {
    match q.get(key).filter(|v| !v.is_empty()) {
        None => Ok(0.0),
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v}"))),
    }
}

async fn logs(
    State(e): State<SharedEngine>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<Response> {
    let stdout = q.flag("stdout", false);
    let stderr = q.flag("stderr", false);
    if !stdout && !stderr {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let tail = match q.get("tail") {
        None | Some("all") | Some("") => None,
        Some(n) => Some(
            n.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid tail: {n}")))?
                .max(0) as usize,
        ),
    };
    let opts = LogOptions {
        stdout,
        stderr,
        follow: q.flag("follow", false),
        tail,
        timestamps: q.flag("timestamps", false),
        since: unix_time(&q, "since")?,
        until: unix_time(&q, "until")?,
    };
    let (tty, rx) = e.logs(&id, opts).await?;
    let mut resp = body::stream(rx).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(hijack::content_type(tty)),
    );
    Ok(resp)
}

async fn attach(
    State(e): State<SharedEngine>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
    mut req: Request,
) -> ApiResult<Response> {
    let streams = AttachStreams {
        stdin: q.flag("stdin", false),
        stdout: q.flag("stdout", false),
        stderr: q.flag("stderr", false),
    };
    let (tty, connect) = e.attach(&id, streams)?;
    match hijack::take(&mut req) {
        Some(upgrade) => {
            tokio::spawn(async move {
                let Ok(client) = upgrade.await else { return };
                match connect.await {
                    Ok(stream) => hijack::pump(hyper_util::rt::TokioIo::new(client), stream).await,
                    Err(err) => tracing::debug!("attach: {err}"),
                }
            });
            Ok(hijack::switching(tty))
        }
        None => Ok(hijack::body_response(
            tty,
            async move { connect.await.ok() },
        )),
    }
}

async fn resize(
    State(e): State<SharedEngine>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    let (h, w) = q.size()?;
    e.resize(&id, h, w).await?;
    Ok(StatusCode::OK)
}

async fn pause(State(e): State<SharedEngine>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    e.pause(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unpause(State(e): State<SharedEngine>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    e.unpause(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rename(
    State(e): State<SharedEngine>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    let name = q
        .get("name")
        .ok_or_else(|| ApiError::bad_request("name is required"))?;
    e.rename(&id, name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn top(
    State(e): State<SharedEngine>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<Response> {
    Ok(Json(e.top(&id, q.get("ps_args")).await?).into_response())
}

async fn stats(
    State(e): State<SharedEngine>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<Response> {
    let stream = q.flag("stream", true);
    if q.flag("one-shot", false) {
        return Ok(Json(e.stats(&id, None).await?).into_response());
    }
    if !stream {
        // As Docker: a second sample a moment after the first, so clients can compute the
        // CPU share against precpu_stats.
        let first = e.stats(&id, None).await?;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        return Ok(Json(e.stats(&id, Some(&first)).await?).into_response());
    }
    let first = e.stats(&id, None).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let mut next = Some(first);
        while let Some(s) = next.take() {
            let mut line = serde_json::to_vec(&s).unwrap_or_default();
            line.push(b'\n');
            if tx.send(Bytes::from(line)).await.is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            next = e.stats(&id, Some(&s)).await.ok();
        }
    });
    let mut resp = body::stream(rx).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

async fn prune(State(e): State<SharedEngine>, Query(q): Query<Params>) -> ApiResult<Response> {
    Ok(Json(e.prune(&q.filters()?).await?).into_response())
}
