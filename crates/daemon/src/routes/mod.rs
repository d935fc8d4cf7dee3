//! The routes: one module per API area. Handlers parse, call the engine, render.

mod build;
mod containers;
mod distribution;
mod exec;
mod images;
mod networks;
mod system;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode};
use wharf_api::{API_VERSION, MIN_API_VERSION, parse_version};

use crate::SharedEngine;
use crate::error::ApiError;

pub fn router(engine: SharedEngine) -> Router {
    Router::new()
        .merge(system::routes())
        .merge(containers::routes())
        .merge(exec::routes())
        .merge(images::routes())
        .merge(networks::routes())
        .merge(distribution::routes())
        .merge(build::routes())
        .fallback(|req: Request<Body>| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("page not found: {} {}", req.method(), req.uri().path()),
            )
        })
        .with_state(engine)
}

/// Removes the `/v1.NN` prefix clients put in front of every path; refuses versions below the
/// minimum, as Docker does.
pub fn strip_version<B>(mut req: Request<B>) -> Result<Request<B>, Box<Response<Body>>> {
    let (version, rest) = wharf_api::strip_version(req.uri().path());
    let Some(version) = version else {
        return Ok(req);
    };
    let too_old = parse_version(version) < parse_version(MIN_API_VERSION);
    if too_old {
        let msg = format!(
            "client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        );
        return Err(Box::new(axum::response::IntoResponse::into_response(
            ApiError::bad_request(msg),
        )));
    }
    let rest = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    if let Ok(uri) = rest.parse() {
        *req.uri_mut() = uri;
    }
    Ok(req)
}

/// Headers Docker puts on every response; clients read the API version from them.
pub fn add_common_headers(resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert(
        "Server",
        HeaderValue::from_static(concat!("wharf/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
}

/// Query parameters, keeping repeated keys (`names=a&names=b`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Docker's boolean query values: "1", "true", "True" are true; absent is `default`.
    pub fn flag(&self, key: &str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(v) => !matches!(v.to_ascii_lowercase().as_str(), "" | "0" | "false" | "no"),
        }
    }

    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v}"))),
        }
    }

    /// A tty size from `h` and `w`.
    pub fn size(&self) -> Result<(u16, u16), ApiError> {
        let dim = |k| -> Result<u16, ApiError> {
            Ok(self.int(k)?.unwrap_or(0).clamp(0, i64::from(u16::MAX)) as u16)
        };
        Ok((dim("h")?, dim("w")?))
    }

    pub fn filters(&self) -> Result<wharf_api::Filters, ApiError> {
        wharf_api::parse_filters(self.get("filters").unwrap_or("")).map_err(ApiError::bad_request)
    }
}

/// Parses a JSON request body; an empty body is the type's default.
pub fn json_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}
