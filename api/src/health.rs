//! Liveness, readiness and the API's own `/metrics`.
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hashtale_core::{metrics, Error};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{ApiResult, AppState, ErrorBody};

/// Content type of the Prometheus text exposition format.
pub(crate) const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// Longest `/readyz` waits for the database (a pool waits much longer for a connection while
/// the database is down; a readiness probe must answer before its own timeout).
const READYZ_DB_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain", example = "ok")))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// Whether a dependency answers.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Reach {
    Ok,
    Unreachable,
}

/// Readiness of the database and the broker.
#[derive(Serialize, ToSchema)]
pub(crate) struct Ready {
    database: Reach,
    broker: Reach,
}

/// Database and broker reachable (503 while either is away, e.g. during a broker restart).
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "Not ready: what is unreachable", body = Ready),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let db = match tokio::time::timeout(READYZ_DB_TIMEOUT, state.store.ping()).await {
        Ok(r) => r,
        Err(_) => Err(Error::Transient(format!(
            "no answer within {READYZ_DB_TIMEOUT:?}"
        ))),
    };
    // Also a reconnect attempt when the broker is down and the backoff allows one.
    let broker = state.queue.check_ready().await;
    if let Err(e) = &db {
        // The details stay in the log: they can name hosts, users and schemas.
        tracing::warn!("readyz: database: {e}");
    }
    let reach = |ok: bool| if ok { Reach::Ok } else { Reach::Unreachable };
    let status = if db.is_ok() && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Ready {
        database: reach(db.is_ok()),
        broker: reach(broker),
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics (also served on the process's own metrics port).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ))]
pub(crate) async fn metrics_text(State(state): State<AppState>) -> ApiResult<Response> {
    let counts = state.store.job_counts().await?;
    let depth = state.queue.depth(&state.store).await.ok();
    let text = metrics::render(Some(&counts), depth);
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response())
}
