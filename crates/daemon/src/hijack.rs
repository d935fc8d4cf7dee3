//! Docker's hijacked streams: answer `101 UPGRADED` (`Upgrade: tcp`), then the connection is a
//! raw byte pipe between the client and a container's stdio.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::IntoResponse;
use axum::response::Response;
use hyper::upgrade::OnUpgrade;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The content type Docker uses: raw with a tty, multiplexed frames without.
pub fn content_type(tty: bool) -> &'static str {
    if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    }
}

/// Takes the upgrade handle out of a request that asked for `Upgrade: tcp`.
pub fn take(req: &mut Request<Body>) -> Option<OnUpgrade> {
    let wants = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("tcp"));
    if wants {
        req.extensions_mut().remove::<OnUpgrade>()
    } else {
        None
    }
}

/// The `101` answer that completes the hijack.
pub fn switching(tty: bool) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(tty)),
    );
    resp
}

/// Copies both ways until the container side ends. The client's end of input is passed on as
/// a half-close (so a container reading stdin sees EOF); the container's end of output closes
/// the client's connection.
pub async fn pump<C, S>(client: C, container: S)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut cont_r, mut cont_w) = tokio::io::split(container);
    let input = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_r, &mut cont_w).await;
        let _ = cont_w.shutdown().await;
    });
    let _ = tokio::io::copy(&mut cont_r, &mut client_w).await;
    let _ = client_w.flush().await;
    let _ = client_w.shutdown().await;
    input.abort();
}

/// For clients that did not ask for an upgrade: the stream `source` yields (the container's
/// output) becomes the response body.
pub fn body_response<S, F>(tty: bool, source: F) -> Response
where
    F: Future<Output = Option<S>> + Send + 'static,
    S: AsyncRead + Unpin + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let Some(mut stream) = source.await else {
            return;
        };
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut resp = crate::body::stream(rx).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(tty)),
    );
    resp
}
