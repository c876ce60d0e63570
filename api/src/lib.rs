//! hashtale's HTTP API (axum).
//!
//! Reads are open; writes (`POST /v1/posts`) need `Authorization: Bearer <api.token>`. The
//! token is kept only as its SHA-256 and compared in constant time. Uploaded bytes must be an
//! image by magic bytes; URLs must be http(s) to public addresses (checked again, after DNS,
//! when the worker fetches them). The human-rating pages (`/rate/…`, `/admin/…`) live in
//! [`ratings`].
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use hashtale_core::config::Config;
use hashtale_core::metrics;
use hashtale_core::Error;
use hashtale_fetch::Fetcher;
use hashtale_ingest::{Ingestor, PostDraft};
use hashtale_queue::JobQueue;
use hashtale_store::Store;
use hashtale_types::ImageSource;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod openapi;
pub mod ratings;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub queue: JobQueue,
    /// Checks, commits and enqueues posts (the same as the scheduler's sources).
    ingestor: Ingestor,
    /// Fetches a URL post's image for the ratings page.
    fetcher: Fetcher,
    /// SHA-256 of the API token; `None`: writes are disabled.
    token_hash: Option<[u8; 32]>,
    /// The rating pages' settings and secrets.
    ratings: std::sync::Arc<ratings::RatingsState>,
    /// Work that must not be cut short: a post's commit and enqueue run here, so neither a
    /// client hanging up nor a shutdown stops them halfway (shutdown waits for them).
    tasks: TaskTracker,
}

impl AppState {
    pub fn new(store: Store, queue: JobQueue, cfg: &Config) -> hashtale_core::Result<Self> {
        metrics::install();
        let fetcher = Fetcher::new(&cfg.fetch)?;
        Ok(Self {
            ingestor: Ingestor::with_fetcher(store.clone(), queue.clone(), fetcher.clone()),
            fetcher,
            store,
            queue,
            token_hash: (!cfg.api.token.is_empty())
                .then(|| Sha256::digest(cfg.api.token.expose().as_bytes()).into()),
            ratings: std::sync::Arc::new(ratings::RatingsState::new(cfg)),
            tasks: TaskTracker::new(),
        })
    }

    /// The tracker of the API's in-flight commits (see [`serve_on`]).
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }
}

/// An error as a JSON response.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::BadInput(m) => ApiError(StatusCode::BAD_REQUEST, m),
            Error::NotFound(m) => ApiError(StatusCode::NOT_FOUND, m),
            Error::Unsupported(m) => ApiError(StatusCode::UNSUPPORTED_MEDIA_TYPE, m),
            // The database is away (a restart, a network cut): worth retrying, not a bug.
            e if e.is_unavailable() => {
                tracing::warn!("api: {e}");
                ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service unavailable, try again".into(),
                )
            }
            other => {
                tracing::error!("api: {other}");
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
            }
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The router, with body limit `max_upload_bytes` (plus room for multipart framing).
pub fn router(state: AppState, max_upload_bytes: usize) -> Router {
    Router::new()
        .route("/v1/posts", post(create_post))
        .route("/v1/posts/{id}", get(get_post))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/results", get(list_results))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .merge(ratings::routes())
        .layer(DefaultBodyLimit::max(max_upload_bytes + 64 * 1024))
        .with_state(state)
}

/// Binds `api.listen`, so a caller can report a taken port before saying where it serves.
pub async fn bind(cfg: &Config) -> hashtale_core::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(&cfg.api.listen)
        .await
        .map_err(|e| hashtale_core::Error::Other(format!("API on {}: {e}", cfg.api.listen)))
}

/// Serves Prometheus `/metrics` on its own port (`metrics.listen`, or `command`'s default)
/// until `shutdown` turns true; `None` when metrics are off. Binds before returning, so a taken
/// port fails the command at start, naming the address. With `gauges` (a store and queue:
/// `serve`, `run`), the jobs-by-state and queue-depth gauges are read on each scrape.
pub async fn serve_metrics(
    cfg: &Config,
    command: &str,
    gauges: Option<(Store, JobQueue)>,
    mut shutdown: watch::Receiver<bool>,
) -> hashtale_core::Result<Option<SocketAddr>> {
    metrics::install();
    let Some(listen) = cfg.metrics.listen_for(command) else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| hashtale_core::Error::Other(format!("metrics on {listen}: {e}")))?;
    let addr = listener.local_addr()?;
    let gauges = Arc::new(gauges);
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let gauges = gauges.clone();
            async move {
                let text = match gauges.as_ref() {
                    Some((store, queue)) => {
                        let counts = store.job_counts().await.ok();
                        let depth = queue.depth(store).await.ok();
                        metrics::render(counts.as_deref(), depth)
                    }
                    None => metrics::render(None, None),
                };
                ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text)
            }
        }),
    );
    tracing::info!("metrics on http://{addr}/metrics");
    tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!("metrics endpoint: {e}");
        }
    });
    Ok(Some(addr))
}

/// Content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// Serves until `cancel` (see [`serve_on`]).
pub async fn serve(
    state: AppState,
    cfg: &Config,
    cancel: CancellationToken,
) -> hashtale_core::Result<SocketAddr> {
    serve_on(bind(cfg).await?, state, cfg, cancel).await
}

/// Serves on a bound listener until `cancel`; then stops taking connections, lets the
/// requests in progress finish, and waits for the commits they started.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AppState,
    cfg: &Config,
    cancel: CancellationToken,
) -> hashtale_core::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let tasks = state.tasks.clone();
    let app = router(state, cfg.api.max_upload_bytes);
    tracing::info!("API listening on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await?;
    tasks.close();
    tasks.wait().await;
    Ok(addr)
}

fn authorize(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let Some(expected) = state.token_hash else {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "writes are disabled: no api.token is configured".into(),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
    if bool::from(given.ct_eq(&expected)) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API token".into(),
        ))
    }
}

/// JSON body of `POST /v1/posts`.
#[derive(Debug, Deserialize)]
pub struct PostBody {
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(default)]
    pub image_base64: Option<String>,
    #[serde(default)]
    pub caption: Option<String>,
}

async fn create_post(State(state): State<AppState>, req: Request) -> ApiResult<Response> {
    authorize(&state, req.headers())?;
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let body = if ct.starts_with("multipart/form-data") {
        let mp = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError(e.status(), e.body_text()))?;
        from_multipart(mp).await?
    } else if ct.starts_with("application/json") {
        let Json(b): Json<PostBody> = Json::from_request(req, &()).await.map_err(
            |e: axum::extract::rejection::JsonRejection| ApiError(e.status(), e.body_text()),
        )?;
        let image = match (&b.image_url, &b.image_base64) {
            (Some(u), None) => ImageSource::Url(u.clone()),
            (None, Some(s)) => ImageSource::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(s.trim())
                    .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("image_base64: {e}")))?,
            ),
            _ => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    "exactly one of image_url and image_base64 is required".into(),
                ))
            }
        };
        (b.source, b.external_id, image, b.caption)
    } else {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/json or multipart/form-data".into(),
        ));
    };
    let (source, external_id, image, caption) = body;
    let post = state.ingestor.check(
        "api",
        PostDraft {
            source,
            external_id,
            image,
            caption,
        },
    )?;
    // Commit and enqueue on the tracker: once started, they finish even if the client hangs up
    // or the server is stopping (which waits for them). Once the commit succeeded the answer is
    // a success: a job the broker could not take stays `pending` and is published when it is
    // back (`queued: false` says so).
    let ingestor = state.ingestor.clone();
    let submitted = state
        .tasks
        .spawn(async move { ingestor.submit(&post).await })
        .await
        .map_err(|e| Error::Other(format!("ingest task: {e}")))??;
    let status = if submitted.new {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({
            "post_id": submitted.post_id,
            "job_id": submitted.job_id,
            "new": submitted.new,
            "queued": submitted.queued,
        })),
    )
        .into_response())
}

type Parsed = (Option<String>, Option<String>, ImageSource, Option<String>);

async fn from_multipart(mut mp: Multipart) -> ApiResult<Parsed> {
    let (mut source, mut external_id, mut caption, mut bytes, mut url) =
        (None, None, None, None, None);
    let bad = |e: axum::extract::multipart::MultipartError| ApiError(e.status(), e.body_text());
    while let Some(field) = mp.next_field().await.map_err(bad)? {
        match field.name().unwrap_or("") {
            "file" | "image" => bytes = Some(field.bytes().await.map_err(bad)?.to_vec()),
            "image_url" => url = Some(field.text().await.map_err(bad)?),
            "source" => source = Some(field.text().await.map_err(bad)?),
            "external_id" => external_id = Some(field.text().await.map_err(bad)?),
            "caption" => caption = Some(field.text().await.map_err(bad)?),
            _ => {}
        }
    }
    let image = match (bytes, url) {
        (Some(b), None) => ImageSource::Bytes(b),
        (None, Some(u)) => ImageSource::Url(u),
        _ => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "send exactly one of the fields file and image_url".into(),
            ))
        }
    };
    Ok((source, external_id, image, caption))
}

async fn get_job(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Response> {
    match state.store.job(id).await? {
        Some(j) => Ok(Json(j).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no job {id}"))),
    }
}

async fn get_post(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Response> {
    let Some(post) = state.store.post(id).await? else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no post {id}")));
    };
    let job = state.store.job_for_post(id).await?;
    let results = state.store.results_for_post(id).await?;
    let mut post = post;
    post.source = public_source(&post.source);
    Ok(Json(json!({ "post": post, "job": job, "results": results })).into_response())
}

/// A source name as readers may see it: a watched folder by its last component only (not the
/// server's path), a feed URL without credentials.
fn public_source(source: &str) -> String {
    if let Some(dir) = source.strip_prefix("dir:") {
        let name = std::path::Path::new(dir)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return format!("dir:{name}");
    }
    if let Some(feed) = source.strip_prefix("feed:") {
        if let Ok(mut url) = url::Url::parse(feed) {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            return format!("feed:{url}");
        }
    }
    source.to_string()
}

#[cfg(test)]
mod public_source_tests {
    #[test]
    fn hides_server_paths_and_credentials() {
        assert_eq!(super::public_source("dir:/srv/photos/in"), "dir:in");
        assert_eq!(
            super::public_source("feed:https://bob:secret@example.com/f.xml"),
            "feed:https://example.com/f.xml"
        );
        assert_eq!(super::public_source("api:default"), "api:default");
    }
}

#[derive(Debug, Deserialize)]
struct ResultsQuery {
    #[serde(default)]
    since: i64,
    #[serde(default)]
    after: i64,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

async fn list_results(
    State(state): State<AppState>,
    Query(q): Query<ResultsQuery>,
) -> ApiResult<Response> {
    let limit = q.limit.clamp(1, 1000);
    let rows = state.store.results_page(q.since, q.after, limit).await?;
    let next_after = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(json!({ "results": rows, "next_after": next_after })).into_response())
}

/// Longest `/readyz` waits for the database (a pool waits much longer for a connection while
/// the database is down; a readiness probe must answer before its own timeout).
const READYZ_DB_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn readyz(State(state): State<AppState>) -> Response {
    let db = match tokio::time::timeout(READYZ_DB_TIMEOUT, state.store.ping()).await {
        Ok(r) => r,
        Err(_) => Err(Error::Transient(format!(
            "no answer within {READYZ_DB_TIMEOUT:?}"
        ))),
    };
    // Also a reconnect attempt when the broker is down and the backoff allows one.
    let broker = state.queue.check_ready().await;
    let ok = db.is_ok() && broker;
    if let Err(e) = &db {
        // The details stay in the log: they can name hosts, users and schemas.
        tracing::warn!("readyz: database: {e}");
    }
    let body = Json(json!({
        "database": if db.is_ok() { "ok" } else { "unreachable" },
        "broker": if broker { "ok" } else { "unreachable" },
    }));
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

async fn metrics_text(State(state): State<AppState>) -> ApiResult<Response> {
    let counts = state.store.job_counts().await?;
    let depth = state.queue.depth(&state.store).await.ok();
    let text = metrics::render(Some(&counts), depth);
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response())
}
