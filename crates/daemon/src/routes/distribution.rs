//! The registry side of the API: pull (`POST /images/create?fromImage=`), push
//! (`POST /images/{name}/push`), `POST /auth` and `GET /distribution/{name}/json`.
//! Transfers answer with Docker's JSON progress lines, one per message.

use std::future::Future;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::mpsc;
use wharf_engine::distribution::{
    AuthConfig, DistributionError, LayerCompression, Progress, create_reference,
};

use super::Params;
use crate::SharedEngine;
use crate::body;
use crate::error::{ApiError, ApiResult};

pub fn routes() -> Router<SharedEngine> {
    Router::new()
        .route("/auth", post(auth))
        .route("/distribution/{*rest}", get(inspect))
}

/// The credentials a request carries in `X-Registry-Auth`, if any.
fn registry_auth(headers: &HeaderMap) -> ApiResult<Option<AuthConfig>> {
    let Some(value) = headers.get("X-Registry-Auth") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request("X-Registry-Auth is not text"))?;
    Ok(AuthConfig::from_header(text)?)
}

fn line(p: &Progress) -> Bytes {
    // A struct of strings and numbers always serialises.
    let mut v = serde_json::to_vec(p).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Runs a transfer and answers with its progress. Until more than `quiet` messages have
/// come (the ones that say nothing yet, such as "Pulling from"), nothing is sent: a transfer
/// that fails by then answers with an HTTP error and its status, as Docker's daemon does
/// when it has flushed nothing. Later failures end the stream with an `errorDetail` line.
async fn transfer<F>(
    quiet: usize,
    start: impl FnOnce(mpsc::Sender<Progress>) -> F,
) -> ApiResult<Response>
where
    F: Future<Output = Result<(), DistributionError>> + Send + 'static,
{
    let (ptx, mut prx) = mpsc::channel::<Progress>(64);
    // The task owns the only sender: the channel closes when the transfer has ended.
    let task = tokio::spawn(start(ptx));
    let mut held = Vec::new();
    while held.len() <= quiet {
        match prx.recv().await {
            Some(p) => held.push(p),
            None => break,
        }
    }
    let ended = held.len() <= quiet;
    if ended {
        match join(task).await {
            Err(e) => return Err(e),
            Ok(()) => {
                let (tx, rx) = mpsc::channel(held.len().max(1));
                for p in &held {
                    let _ = tx.try_send(line(p));
                }
                return Ok(json_stream(rx));
            }
        }
    }
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        // A client that went away does not stop the transfer; its messages are dropped.
        for p in &held {
            let _ = tx.send(line(p)).await;
        }
        while let Some(p) = prx.recv().await {
            let _ = tx.send(line(&p)).await;
        }
        if let Err(e) = join(task).await {
            let _ = tx.send(line(&Progress::error(e.message))).await;
        }
    });
    Ok(json_stream(rx))
}

async fn join(task: tokio::task::JoinHandle<Result<(), DistributionError>>) -> ApiResult<()> {
    match task.await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("transfer task failed: {e}"),
        )),
    }
}

fn json_stream(rx: mpsc::Receiver<Bytes>) -> Response {
    let mut resp = body::stream(rx).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `POST /images/create?fromImage=&tag=&platform=`: a pull; without a tag or digest
/// anywhere, of every tag (what `docker pull -a` sends).
pub(super) async fn pull(e: SharedEngine, q: &Params, headers: &HeaderMap) -> ApiResult<Response> {
    let from = q.get("fromImage").unwrap_or_default().to_string();
    let (reference, all) = create_reference(&from, q.get("tag"))?;
    let platform = q
        .get("platform")
        .filter(|p| !p.trim().is_empty())
        .map(str::to_string);
    let auth = registry_auth(headers)?;
    transfer(1, move |tx| async move {
        let d = &e.distribution;
        if all {
            d.pull_all_tags(&reference, platform.as_deref(), auth.as_ref(), &tx)
                .await
                .map(drop)
        } else {
            d.pull(&reference, platform.as_deref(), auth.as_ref(), &tx)
                .await
                .map(drop)
        }
    })
    .await
}

/// `POST /images/{name}/push?tag=`: without a tag in the name or the query, every tag of
/// the repository. `compression=zstd` (wharf's own) compresses uncompressed layers with zstd.
pub(super) async fn push(
    e: SharedEngine,
    name: &str,
    q: &Params,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let name = name.to_string();
    let tag = q.get("tag").filter(|t| !t.is_empty()).map(str::to_string);
    let compression = LayerCompression::parse(q.get("compression").unwrap_or_default())?;
    let auth = registry_auth(headers)?;
    transfer(0, move |tx| async move {
        e.distribution
            .push(&name, tag.as_deref(), auth.as_ref(), compression, &tx)
            .await
            .map(drop)
    })
    .await
}

/// `POST /auth`: checks credentials against their registry; stores nothing (the client
/// keeps them). Refused credentials answer 401.
async fn auth(State(e): State<SharedEngine>, body: Bytes) -> ApiResult<Response> {
    let config: AuthConfig = super::json_body(&body)?;
    match e.distribution.login(&config).await {
        Ok(status) => {
            Ok(Json(serde_json::json!({ "Status": status, "IdentityToken": "" })).into_response())
        }
        Err(err @ DistributionError::Unauthorized(_)) => {
            Err(ApiError::new(StatusCode::UNAUTHORIZED, err.message()))
        }
        Err(err) => Err(err.into()),
    }
}

/// `GET /distribution/{name}/json`: the descriptor the name resolves to in its registry and
/// the platforms it offers.
async fn inspect(
    State(e): State<SharedEngine>,
    Path(rest): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Some(name) = rest.strip_suffix("/json") else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("page not found: GET /distribution/{rest}"),
        ));
    };
    let auth = registry_auth(&headers)?;
    let found = e.distribution.inspect(name, auth.as_ref()).await?;
    Ok(Json(found).into_response())
}
