//! Test servers for the client's tests: an axum app per test, on a port the OS picks, so
//! redirects can point at any address and port a test needs.
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// What the test server answers for one path (unknown paths get 404).
#[derive(Clone)]
pub(crate) enum Reply {
    /// 200, `image/png`, with a Content-Length.
    Ok(Vec<u8>),
    /// 200, `image/png`, streamed without Content-Length (chunked), so only the bytes that
    /// arrive can tell the size.
    Unsized(Vec<u8>),
    /// 302 to this location.
    Redirect(String),
    /// Never answers (within any test's patience).
    Hang,
}

impl Reply {
    async fn answer(self) -> Response {
        match self {
            Reply::Ok(b) => ([(header::CONTENT_TYPE, "image/png")], b).into_response(),
            Reply::Unsized(b) => {
                let chunks = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(b))]);
                (
                    [(header::CONTENT_TYPE, "image/png")],
                    Body::from_stream(chunks),
                )
                    .into_response()
            }
            Reply::Redirect(to) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
            Reply::Hang => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                StatusCode::GATEWAY_TIMEOUT.into_response()
            }
        }
    }
}

/// A listener on `ip`, port 0, and the address it got.
pub(crate) async fn bind(ip: &str) -> (tokio::net::TcpListener, SocketAddr) {
    let l = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// Serves `routes` on `listener` in the background, for as long as the test runs.
pub(crate) fn serve(listener: tokio::net::TcpListener, routes: Vec<(&'static str, Reply)>) {
    let app = routes
        .into_iter()
        .fold(Router::new(), |app, (path, reply)| {
            app.route(path, get(move || reply.clone().answer()))
        });
    tokio::spawn(async move { axum::serve(listener, app).await });
}
