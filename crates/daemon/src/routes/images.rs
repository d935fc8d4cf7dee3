//! `/images/*`. Image names contain slashes, so everything under `/images/` past the fixed
//! routes is matched by hand.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::mpsc;

use super::Params;
use crate::SharedEngine;
use crate::body::{self, BodyReader, BodyWriter};
use crate::error::{ApiError, ApiResult, chain};

pub fn routes() -> Router<SharedEngine> {
    Router::new()
        .route("/images/json", get(list))
        .route("/images/create", post(create))
        .route("/images/load", post(load))
        .route("/images/get", get(save_many))
        .route("/images/prune", post(prune))
        .route(
            "/images/{*rest}",
            get(get_named).post(post_named).delete(remove),
        )
}

async fn list(State(e): State<SharedEngine>, Query(q): Query<Params>) -> ApiResult<Response> {
    let filters = q.filters()?;
    let all = q.flag("all", false);
    let images = blocking(move || e.image_list(all, &filters)).await?;
    Ok(Json(images).into_response())
}

/// Runs blocking image-store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, wharf_engine::ImageError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("image task failed: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

/// Progress lines as Docker streams them (`{"status": ...}` / `{"errorDetail": ...}`).
fn json_line(value: serde_json::Value) -> Bytes {
    let mut v = serde_json::to_vec(&value).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn json_stream(rx: mpsc::Receiver<Bytes>) -> Response {
    let mut resp = body::stream(rx).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `POST /images/create`: `fromSrc=-` imports the request body; `fromImage` pulls.
async fn create(
    State(e): State<SharedEngine>,
    Query(q): Query<Params>,
    req: Request,
) -> ApiResult<Response> {
    if q.get("fromImage").is_some_and(|s| !s.is_empty()) {
        return super::distribution::pull(e, &q, req.headers()).await;
    }
    let src = q.get("fromSrc").unwrap_or("");
    if src != "-" {
        return Err(ApiError::bad_request(
            "fromSrc must be \"-\" (the request body): importing from a URL is not supported",
        ));
    }
    let repo = q.get("repo").filter(|r| !r.is_empty()).map(String::from);
    let reference = match (repo, q.get("tag").filter(|t| !t.is_empty())) {
        (Some(r), Some(t)) => Some(format!("{r}:{t}")),
        (r, _) => r,
    };
    let changes = q.all("changes");
    let message = q.get("message").map(String::from);
    let mut reader = BodyReader::new(req.into_body());
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let result = blocking(move || {
            e.images.import(
                &mut reader,
                &changes,
                reference.as_deref(),
                message.as_deref(),
            )
        })
        .await;
        let line = match result {
            Ok(image) => json_line(serde_json::json!({ "status": image.id })),
            Err(err) => json_line(
                serde_json::json!({ "errorDetail": { "message": err.message }, "error": err.message }),
            ),
        };
        let _ = tx.send(line).await;
    });
    Ok(json_stream(rx))
}

async fn load(
    State(e): State<SharedEngine>,
    Query(q): Query<Params>,
    req: Request,
) -> ApiResult<Response> {
    let quiet = q.flag("quiet", false);
    let mut reader = BodyReader::new(req.into_body());
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        match blocking(move || e.images.load(&mut reader)).await {
            Ok(lines) => {
                for line in lines {
                    let _ = tx
                        .send(json_line(
                            serde_json::json!({ "stream": format!("{line}\n") }),
                        ))
                        .await;
                }
            }
            Err(err) => {
                let _ = tx.send(json_line(serde_json::json!({ "errorDetail": { "message": err.message }, "error": err.message }))).await;
            }
        }
        let _ = quiet;
    });
    Ok(json_stream(rx))
}

async fn save_many(State(e): State<SharedEngine>, Query(q): Query<Params>) -> ApiResult<Response> {
    save(e, q.all("names")).await
}

async fn save(e: SharedEngine, names: Vec<String>) -> ApiResult<Response> {
    if names.is_empty() {
        return Err(ApiError::bad_request("no image names given"));
    }
    // Resolve first, so a missing image is a clean 404 rather than a broken stream.
    for n in &names {
        let e = e.clone();
        let n = n.clone();
        blocking(move || e.images.resolve(&n).map(|_| ())).await?;
    }
    let (mut writer, rx) = BodyWriter::new();
    tokio::task::spawn_blocking(move || {
        if let Err(err) = e.images.save(&names, &mut writer) {
            tracing::warn!("save: {}", chain(&err));
        }
    });
    let mut resp = body::stream(rx).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(resp)
}

async fn prune(State(e): State<SharedEngine>, Query(q): Query<Params>) -> ApiResult<Response> {
    let filters = q.filters()?;
    let all = filters
        .get("dangling")
        .is_some_and(|v| v.iter().any(|d| d == "false" || d == "0"));
    let engine = e.clone();
    let (deleted, reclaimed) =
        blocking(move || engine.images.prune(all, &|id| engine.image_in_use(id))).await?;
    Ok(
        Json(serde_json::json!({ "ImagesDeleted": deleted, "SpaceReclaimed": reclaimed }))
            .into_response(),
    )
}

/// `GET /images/{name}/json|history|get`.
async fn get_named(
    State(e): State<SharedEngine>,
    Path(rest): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<Response> {
    if let Some(name) = rest.strip_suffix("/json") {
        let name = name.to_string();
        let inspect =
            blocking(move || e.images.resolve(&name).map(|i| e.images.inspect(&i))).await?;
        return Ok(Json(inspect).into_response());
    }
    if let Some(name) = rest.strip_suffix("/history") {
        let name = name.to_string();
        return Ok(Json(blocking(move || e.images.history(&name)).await?).into_response());
    }
    if let Some(name) = rest.strip_suffix("/get") {
        let _ = q;
        return save(e, vec![name.to_string()]).await;
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        format!("page not found: GET /images/{rest}"),
    ))
}

/// `POST /images/{name}/tag?repo=&tag=`, `POST /images/{name}/push?tag=`.
async fn post_named(
    State(e): State<SharedEngine>,
    Path(rest): Path<String>,
    Query(q): Query<Params>,
    headers: HeaderMap,
    _body: Body,
) -> ApiResult<Response> {
    if let Some(name) = rest.strip_suffix("/tag") {
        let repo = q.get("repo").filter(|r| !r.is_empty()).ok_or_else(|| {
            ApiError::bad_request("repository name must have at least one component")
        })?;
        let target = match q.get("tag").filter(|t| !t.is_empty()) {
            Some(t) => format!("{repo}:{t}"),
            None => repo.to_string(),
        };
        let name = name.to_string();
        blocking(move || e.images.tag(&name, &target)).await?;
        return Ok(StatusCode::CREATED.into_response());
    }
    if let Some(name) = rest.strip_suffix("/push") {
        return super::distribution::push(e, name, &q, &headers).await;
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        format!("page not found: POST /images/{rest}"),
    ))
}

async fn remove(
    State(e): State<SharedEngine>,
    Path(name): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<Response> {
    let force = q.flag("force", false);
    let engine = e.clone();
    let deleted = blocking(move || {
        engine
            .images
            .remove(&name, force, &|id| engine.image_in_use(id))
    })
    .await?;
    Ok(Json(deleted).into_response())
}
