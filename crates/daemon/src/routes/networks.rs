//! `/networks/*`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use wharf_api::models::{NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest};

use super::{Params, json_body};
use crate::SharedEngine;
use crate::error::{ApiError, ApiResult};

pub fn routes() -> Router<SharedEngine> {
    Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect))
        .route("/networks/{id}", delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
}

async fn list(State(e): State<SharedEngine>, Query(q): Query<Params>) -> ApiResult<Response> {
    Ok(Json(e.network_list(&q.filters()?)?).into_response())
}

async fn create(State(e): State<SharedEngine>, body: Bytes) -> ApiResult<Response> {
    let req: NetworkCreateRequest = json_body(&body)?;
    if req.name.is_empty() {
        return Err(ApiError::bad_request("network name is required"));
    }
    Ok((StatusCode::CREATED, Json(e.network_create(req).await?)).into_response())
}

async fn inspect(State(e): State<SharedEngine>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(e.network_inspect(&id)?).into_response())
}

async fn remove(State(e): State<SharedEngine>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    e.network_remove(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn prune(State(e): State<SharedEngine>, Query(q): Query<Params>) -> ApiResult<Response> {
    Ok(Json(e.network_prune(&q.filters()?).await?).into_response())
}

async fn connect(
    State(e): State<SharedEngine>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let req: NetworkConnectRequest = json_body(&body)?;
    e.network_connect(&id, req).await?;
    Ok(StatusCode::OK)
}

async fn disconnect(
    State(e): State<SharedEngine>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let req: NetworkDisconnectRequest = json_body(&body)?;
    e.network_disconnect(&id, req).await?;
    Ok(StatusCode::OK)
}
