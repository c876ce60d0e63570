//! The human-rating pages (issue 5): the rater's page behind a per-rater invite link, and the
//! admin report, chart and exports. docs/ratings.md has the design; in short:
//!
//! * Raters: `/rate/{token}`; the token is a random 256-bit value stored only as its SHA-256.
//! * Form posts carry a CSRF token: an HMAC (server secret kept in the database) of the rater and
//!   the assignment, so it is valid only for that rater's form for that item.
//! * Admin: `Authorization: Bearer <admin token>`, or a session cookie set by `POST /admin/login`
//!   (an expiring HMAC, never the token itself), `HttpOnly; SameSite=Strict; Path=/admin`.
//! * Every page is sent with a strict CSP (scripts and styles only from `/static/`), no referrer
//!   (invite tokens are in URLs) and `no-store`.
//!
//! Modules:
//! - [`rater`]: the rater pages (`/rate/{token}`, answer, skip, previous, image) and rater
//!   tokens.
//! - [`admin`]: the admin pages (sign-in, report, chart, exports).
//! - [`csrf`]: the CSRF tokens of the rater forms.
//! - [`session`]: admin access: the bearer token or the signed session cookie.
//! - [`views`]: templates, the HTML error page, the rating form's view and static assets.
use std::sync::Mutex;
use std::time::Instant;

use axum::http::{header, HeaderValue};
use axum::middleware;
use axum::response::Response;
use hashtale_core::config::Config;
use hashtale_ratings::QuestionSet;
use hashtale_store::ratings::Sampling;
use rand::RngCore;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::TokenHash;
use crate::AppState;

mod admin;
mod csrf;
mod rater;
mod session;
mod views;

// Checked against the OpenAPI document by its tests.
#[cfg(test)]
pub(crate) use admin::{MAX_ADMIN_TOKEN_CHARS, MAX_MODEL_VERSION_CHARS};
pub use csrf::csrf_token;
pub use rater::{add_rater, invite_link, new_token, parse_answers, token_sha256};
pub use session::ADMIN_COOKIE;
pub use views::PageError;
use views::PageResult;

/// What the rating routes share, built from the `ratings` config section.
pub struct RatingsState {
    questions: QuestionSet,
    sampling: Sampling,
    /// The admin token; `None`: admin pages are disabled.
    admin_hash: Option<TokenHash>,
    secure_cookie: bool,
    secret: tokio::sync::OnceCell<Vec<u8>>,
    last_sync: Mutex<Option<Instant>>,
}

impl RatingsState {
    pub fn new(cfg: &Config) -> Self {
        let r = &cfg.ratings;
        Self {
            questions: r.questions.clone(),
            sampling: Sampling {
                k: i64::from(r.k.max(1)),
                favour_low_confidence: r.favour_low_confidence,
                prefer_model_version: (!r.prefer_model_version.is_empty())
                    .then(|| r.prefer_model_version.clone()),
                ttl_ms: (r.assignment_ttl_s > 0)
                    .then(|| (r.assignment_ttl_s as i64).saturating_mul(1000)),
            },
            admin_hash: r.effective_admin_token(&cfg.api).map(TokenHash::of),
            secure_cookie: r.base_url(&cfg.api).starts_with("https://"),
            secret: tokio::sync::OnceCell::new(),
            last_sync: Mutex::new(None),
        }
    }
}

/// The rating and admin routes (mounted by [`crate::routes`]).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(rater::rate_page))
        .routes(routes!(rater::answer))
        .routes(routes!(rater::skip))
        .routes(routes!(rater::previous_page))
        .routes(routes!(rater::image))
        .routes(routes!(views::static_js))
        .routes(routes!(views::static_css))
        .routes(routes!(admin::login_page, admin::login))
        .routes(routes!(admin::admin_page))
        .routes(routes!(admin::admin_report_json))
        .routes(routes!(admin::admin_chart))
        .routes(routes!(admin::admin_export_csv))
        .routes(routes!(admin::admin_export_jsonl))
        .layer(middleware::map_response(security_headers))
}

/// Headers for every rating/admin response; a handler may set its own first (images, SVG).
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    let defaults = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in defaults {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    resp
}

/// The server secret signing CSRF tokens and admin sessions (kept in the database).
async fn secret(state: &AppState) -> PageResult<&[u8]> {
    let store = &state.store;
    state
        .ratings
        .secret
        .get_or_try_init(|| async {
            let mut candidate = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut candidate);
            store.ratings_secret("hmac", &candidate).await
        })
        .await
        .map(Vec::as_slice)
        .map_err(PageError::from)
}
