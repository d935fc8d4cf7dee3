//! `/containers/{id}/exec` and `/exec/*`.

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use wharf_api::models::{ExecConfig, ExecStartConfig};
use wharf_engine::container::ExecStart;

use super::{Params, json_body};
use crate::error::{ApiError, ApiResult};
use crate::{SharedEngine, hijack};

pub fn routes() -> Router<SharedEngine> {
    Router::new()
        .route("/containers/{id}/exec", post(create))
        .route("/exec/{id}/start", post(start))
        .route("/exec/{id}/json", get(inspect))
        .route("/exec/{id}/resize", post(resize))
}

async fn create(
    State(e): State<SharedEngine>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let config: ExecConfig = json_body(&body)?;
    let exec_id = e.exec_create(&id, config)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "Id": exec_id })),
    )
        .into_response())
}

async fn start(
    State(e): State<SharedEngine>,
    Path(id): Path<String>,
    mut req: Request,
) -> ApiResult<Response> {
    let upgrade = hijack::take(&mut req);
    let raw = req
        .into_body()
        .collect()
        .await
        .map_err(|err| ApiError::bad_request(format!("reading the request: {err}")))?
        .to_bytes();
    let opts: ExecStartConfig = json_body(&raw)?;
    let detach = opts.detach.unwrap_or(false);
    let tty = opts.tty.unwrap_or(false);
    let start = ExecStart { detach, tty };
    if let (Some(upgrade), false) = (upgrade, detach) {
        // Check the instance now so a bad id is a plain 404; start the process only once the
        // client has the 101, so no output races the client's switch to the raw stream.
        e.exec_inspect(&id)?;
        tokio::spawn(async move {
            let Ok(client) = upgrade.await else { return };
            let mut client = hyper_util::rt::TokioIo::new(client);
            match e.exec_start(&id, start).await {
                Ok(Some(stream)) => hijack::pump(client, stream).await,
                Ok(None) => {}
                Err(err) => {
                    let text = format!("{}\r\n", crate::error::chain(&err));
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut client, text.as_bytes()).await;
                }
            }
        });
        return Ok(hijack::switching(tty));
    }
    let Some(stream) = e.exec_start(&id, start).await? else {
        return Ok(StatusCode::OK.into_response());
    };
    Ok(hijack::body_response(tty, async move { Some(stream) }))
}

async fn inspect(State(e): State<SharedEngine>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(e.exec_inspect(&id)?).into_response())
}

async fn resize(
    State(e): State<SharedEngine>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    let (h, w) = q.size()?;
    e.exec_resize(&id, h, w).await?;
    Ok(StatusCode::OK)
}
