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
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use base64::Engine;
use hashtale_core::config::Config;
use hashtale_core::sign::{hmac_sha256_parts, verify_parts};
use hashtale_core::Error;
use hashtale_ratings::{distribution_svg, export, QuestionSet, Report};
use hashtale_store::ratings::{
    assignment_state, Assignment, NewAnswer, Rater, RatingItem, Sampling, SubmitOutcome,
};
use hashtale_store::sha256_hex;
use hashtale_store::Store;
use hashtale_types::now_ms;
use minijinja::context;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{check_bearer, Presented, TokenHash};
use crate::params::{Id, PageForm, PagePath, PageQuery};
use crate::AppState;

/// Name of the admin session cookie.
pub const ADMIN_COOKIE: &str = "hashtale_admin";
/// How long an admin session cookie is valid.
const ADMIN_SESSION: Duration = Duration::from_secs(12 * 3600);
/// Most hashtags asked about per result (bounds the form).
const MAX_HASHTAGS: usize = 30;
/// How often new results are made rateable while raters are busy (also done whenever a rater
/// would otherwise be told that nothing is left).
const SLOT_SYNC_EVERY: Duration = Duration::from_secs(5);

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

/// A new random rater token (256 bits, URL-safe base64).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// How rater tokens are stored: hex SHA-256.
pub fn token_sha256(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// Adds a rater with a fresh token; returns the rater and the token (shown once, never stored).
pub async fn add_rater(store: &Store, name: &str) -> hashtale_core::Result<(Rater, String)> {
    let token = new_token();
    let rater = store.add_rater(name, &token_sha256(&token)).await?;
    Ok((rater, token))
}

/// The invite link of a token.
pub fn invite_link(cfg: &Config, token: &str) -> String {
    format!("{}/rate/{token}", cfg.ratings.base_url(&cfg.api))
}

/// The rating and admin routes (mounted by [`crate::routes`]).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(rate_page))
        .routes(routes!(answer))
        .routes(routes!(skip))
        .routes(routes!(previous_page))
        .routes(routes!(image))
        .routes(routes!(static_js))
        .routes(routes!(static_css))
        .routes(routes!(login_page, login))
        .routes(routes!(admin_page))
        .routes(routes!(admin_report_json))
        .routes(routes!(admin_chart))
        .routes(routes!(admin_export_csv))
        .routes(routes!(admin_export_jsonl))
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

// ---------------------------------------------------------------------------------------------
// Templates and errors

fn templates() -> &'static minijinja::Environment<'static> {
    static ENV: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        for (name, src) in [
            ("layout.html", include_str!("../templates/layout.html")),
            ("message.html", include_str!("../templates/message.html")),
            ("done.html", include_str!("../templates/done.html")),
            ("rate.html", include_str!("../templates/rate.html")),
            ("login.html", include_str!("../templates/login.html")),
            ("admin.html", include_str!("../templates/admin.html")),
        ] {
            env.add_template(name, src)
                .expect("the built-in templates parse");
        }
        env
    })
}

fn render(name: &str, ctx: minijinja::Value) -> Result<String, PageError> {
    templates()
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| {
            tracing::error!("rendering {name}: {e:#}");
            PageError::internal()
        })
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// An error shown as a small HTML page (its message is escaped by the template).
#[derive(Debug)]
pub struct PageError(StatusCode, String);

impl PageError {
    pub(crate) fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        PageError(status, msg.into())
    }
    fn bad(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }
    fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl From<Error> for PageError {
    fn from(e: Error) -> Self {
        match e {
            Error::BadInput(m) => PageError::bad(m),
            Error::NotFound(m) => PageError::new(StatusCode::NOT_FOUND, format!("not found: {m}")),
            // The database is away (a restart, a network cut): worth retrying, not a bug.
            e if e.is_unavailable() => {
                tracing::warn!("ratings: {e}");
                PageError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the service is unavailable, try again",
                )
            }
            other => {
                tracing::error!("ratings: {other}");
                PageError::internal()
            }
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = match self.0 {
            StatusCode::BAD_REQUEST => "Invalid answer",
            StatusCode::UNAUTHORIZED => "Not signed in",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::CONFLICT => "Cannot change this item",
            StatusCode::SERVICE_UNAVAILABLE => "Unavailable",
            _ => "Error",
        };
        let body = templates()
            .get_template("message.html")
            .and_then(|t| t.render(context! { title, message => &self.1 }))
            .unwrap_or_else(|_| self.1.clone());
        html(self.0, body)
    }
}

type PageResult<T = Response> = Result<T, PageError>;

// ---------------------------------------------------------------------------------------------
// Secrets, tokens, CSRF

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

/// The fields a CSRF token signs: it is valid for one rater's form for one assignment.
fn csrf_parts(rater_id: i64, assignment_id: i64) -> [String; 3] {
    [
        "csrf".into(),
        rater_id.to_string(),
        assignment_id.to_string(),
    ]
}

fn as_bytes(parts: &[String]) -> Vec<&[u8]> {
    parts.iter().map(String::as_bytes).collect()
}

/// The CSRF token of a rater's form for one assignment.
pub fn csrf_token(secret: &[u8], rater_id: i64, assignment_id: i64) -> String {
    let parts = csrf_parts(rater_id, assignment_id);
    hex::encode(hmac_sha256_parts(secret, &as_bytes(&parts)))
}

fn check_csrf(
    secret: &[u8],
    rater_id: i64,
    assignment_id: i64,
    given: Option<&str>,
) -> PageResult<()> {
    let Some(given) = given.filter(|g| !g.is_empty()) else {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "missing CSRF token: reload the page and answer again",
        ));
    };
    let parts = csrf_parts(rater_id, assignment_id);
    let ok = hex::decode(given).is_ok_and(|tag| verify_parts(secret, &as_bytes(&parts), &tag));
    if ok {
        Ok(())
    } else {
        Err(PageError::new(
            StatusCode::FORBIDDEN,
            "invalid CSRF token: reload the page and answer again",
        ))
    }
}

/// The active rater holding `token`, or 401.
async fn rater(state: &AppState, token: &str) -> PageResult<Rater> {
    let well_formed = (16..=128).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    // Looked up by SHA-256: the database compares digests, never the token itself, so response
    // times say nothing useful about a guessed token.
    let found = if well_formed {
        state
            .store
            .rater_by_token_sha256(&token_sha256(token))
            .await?
    } else {
        None
    };
    found.ok_or_else(|| {
        PageError::new(
            StatusCode::UNAUTHORIZED,
            "this invite link is not valid (or it was revoked); ask for a new one",
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Rater pages

/// One hashtag of the rating form.
#[derive(Serialize)]
struct TagView {
    index: usize,
    tag: String,
    label: String,
    /// Attention weights quantised to CSS classes w0..w10 (empty: no map stored).
    cells: Vec<u8>,
    checked: bool,
}

#[derive(Serialize)]
struct OptionView {
    value: usize,
    key: usize,
    label: String,
    checked: bool,
}

#[derive(Serialize)]
struct ScaleView {
    id: String,
    text: String,
    options: Vec<OptionView>,
}

/// The hashtags of a result as asked: text and attention map, in the model's order.
fn hashtags_of(output: &hashtale_types::ImageResult) -> Vec<(String, Option<Vec<f32>>)> {
    output
        .hashtags
        .iter()
        .map(|h| {
            let attn = (h.attention.len() == 49).then(|| h.attention.clone());
            (h.tag.clone(), attn)
        })
        .take(MAX_HASHTAGS)
        .collect()
}

/// The story of a result, if it has one worth asking about.
fn story_of(item: &RatingItem) -> Option<String> {
    item.result
        .story
        .clone()
        .or_else(|| item.result.output.story.clone())
        .filter(|s| !s.trim().is_empty())
}

/// Opacity classes 0..=10 of a 7×7 attention map, relative to its peak.
fn quantise(w: &[f32]) -> Vec<u8> {
    let max = w
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold(0.0f32, f32::max);
    w.iter()
        .map(|&x| {
            if max > 0.0 && x.is_finite() && x > 0.0 {
                ((x / max) * 10.0).round().clamp(0.0, 10.0) as u8
            } else {
                0
            }
        })
        .collect()
}

async fn render_item(
    state: &AppState,
    token: &str,
    rater: &Rater,
    item: &RatingItem,
    editing: bool,
) -> PageResult {
    let secret = secret(state).await?;
    let q = &state.ratings.questions;
    let prefill: HashMap<(String, i32), i32> = if editing {
        state
            .store
            .assignment_answers(item.assignment.id)
            .await?
            .into_iter()
            .map(|(qid, i, v)| ((qid, i), v))
            .collect()
    } else {
        HashMap::new()
    };
    let hashtags: Vec<TagView> = hashtags_of(&item.result.output)
        .into_iter()
        .enumerate()
        .map(|(i, (tag, attn))| TagView {
            index: i,
            label: format!("#{}", tag.trim_start_matches('#')),
            tag,
            cells: attn.as_deref().map(quantise).unwrap_or_default(),
            checked: prefill.get(&("q1".to_string(), i as i32)) == Some(&1),
        })
        .collect();
    let scale = |question: &hashtale_ratings::Question| ScaleView {
        id: question.id.clone(),
        text: question.text.clone(),
        options: question
            .scale
            .labels
            .iter()
            .enumerate()
            .map(|(v, label)| OptionView {
                value: v,
                key: v + 1,
                label: label.clone(),
                checked: prefill.get(&(question.id.clone(), 0)) == Some(&(v as i32)),
            })
            .collect(),
    };
    let has_previous = !editing
        && state
            .store
            .previous_rating_assignment(rater.id)
            .await?
            .is_some();
    let body = render(
        "rate.html",
        context! {
            base => format!("/rate/{token}"),
            assignment => item.assignment.id,
            result_id => item.result.id,
            csrf => csrf_token(secret, rater.id, item.assignment.id),
            hashtags,
            story => story_of(item),
            q1 => context! {
                text => &q.q1.text,
                no => q.q1.scale.labels.first(),
                yes => q.q1.scale.labels.get(1),
            },
            q2 => scale(&q.q2),
            q3 => scale(&q.q3),
            editing,
            has_previous,
        },
    )?;
    Ok(html(StatusCode::OK, body))
}

/// Makes new results rateable: at most every few seconds, or now when `force`.
async fn sync_slots(state: &AppState, force: bool) -> PageResult<()> {
    let due = {
        let mut last = state
            .ratings
            .last_sync
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let due = force || last.is_none_or(|t| t.elapsed() >= SLOT_SYNC_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    };
    if due {
        state.store.sync_rating_slots().await?;
    }
    Ok(())
}

/// The rater's current item, taking a new one if needed.
async fn current_assignment(state: &AppState, rater: &Rater) -> PageResult<Option<Assignment>> {
    sync_slots(state, false).await?;
    let sampling = &state.ratings.sampling;
    if let Some(a) = state
        .store
        .next_rating_assignment(rater.id, sampling)
        .await?
    {
        return Ok(Some(a));
    }
    sync_slots(state, true).await?;
    Ok(state
        .store
        .next_rating_assignment(rater.id, sampling)
        .await?)
}

/// The rater's token in a path: what [`rater`] accepts as well formed.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Describes the path parameter; handlers take it as a `String`.
struct TokenParam {
    /// The rater's invite token (from `hashtale raters add`).
    #[param(min_length = 16, max_length = 128, pattern = "^[A-Za-z0-9_-]{16,128}$")]
    token: String,
}

/// The rater's current item (a new one is assigned when needed), or "all done".
#[utoipa::path(get, path = "/rate/{token}", tag = "ratings", params(TokenParam),
    responses(
        (status = 400, description = "The token is not valid UTF-8 once percent-decoded", body = String, content_type = "text/html"),
        (status = 200, description = "The rating form, or the page saying nothing is left", body = String, content_type = "text/html"),
        (status = 401, description = "Not a valid invite token (or revoked)", body = String, content_type = "text/html"),
        (status = 503, description = "The database is unavailable; try again", body = String, content_type = "text/html"),
    ))]
async fn rate_page(State(state): State<AppState>, PagePath(token): PagePath<String>) -> PageResult {
    let rater = rater(&state, &token).await?;
    match current_assignment(&state, &rater).await? {
        Some(a) => {
            let item = state.store.rating_item(&a).await?;
            render_item(&state, &token, &rater, &item, false).await
        }
        None => {
            let has_previous = state
                .store
                .previous_rating_assignment(rater.id)
                .await?
                .is_some();
            let body = render(
                "done.html",
                context! { rater => &rater.name, base => format!("/rate/{token}"), has_previous },
            )?;
            Ok(html(StatusCode::OK, body))
        }
    }
}

/// The rater's last answered item, to change the answer.
#[utoipa::path(get, path = "/rate/{token}/previous", tag = "ratings", params(TokenParam),
    responses(
        (status = 400, description = "The token is not valid UTF-8 once percent-decoded", body = String, content_type = "text/html"),
        (status = 200, description = "The rating form, filled in", body = String, content_type = "text/html"),
        (status = 401, description = "Not a valid invite token (or revoked)", body = String, content_type = "text/html"),
        (status = 503, description = "The database is unavailable; try again", body = String, content_type = "text/html"),
        (status = 404, description = "Nothing answered yet", body = String, content_type = "text/html"),
    ))]
async fn previous_page(
    State(state): State<AppState>,
    PagePath(token): PagePath<String>,
) -> PageResult {
    let rater = rater(&state, &token).await?;
    let Some(a) = state.store.previous_rating_assignment(rater.id).await? else {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            "you have not answered anything yet",
        ));
    };
    let item = state.store.rating_item(&a).await?;
    render_item(&state, &token, &rater, &item, true).await
}

/// A posted form as name → value; repeated names are refused.
fn form_fields(fields: Vec<(String, String)>) -> PageResult<HashMap<String, String>> {
    let mut out = HashMap::new();
    for (k, v) in fields {
        if out.contains_key(&k) {
            return Err(PageError::bad(format!("field {k} was sent twice")));
        }
        out.insert(k, v);
    }
    Ok(out)
}

fn assignment_field(fields: &HashMap<String, String>) -> PageResult<i64> {
    fields
        .get("assignment")
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or_else(|| PageError::bad("assignment: an item id is required"))
}

/// The rater's assignment `id`, or 404 (also for other raters' items: nothing is revealed).
async fn own_assignment(state: &AppState, rater: &Rater, id: i64) -> PageResult<Assignment> {
    match state.store.rating_assignment(id).await? {
        Some(a) if a.rater_id == rater.id => Ok(a),
        _ => Err(PageError::new(
            StatusCode::NOT_FOUND,
            "this item is not assigned to you",
        )),
    }
}

/// Checks the posted answers against the item and the scales; builds the rows to store.
pub fn parse_answers(
    questions: &QuestionSet,
    output: &hashtale_types::ImageResult,
    has_story: bool,
    fields: &HashMap<String, String>,
) -> Result<Vec<NewAnswer>, String> {
    let tags = hashtags_of(output);
    let mut answers = Vec::new();
    let mut seen: HashSet<&str> = ["assignment", "csrf"].into_iter().collect();
    let number = |name: &str, v: &str| -> Result<i32, String> {
        v.trim()
            .parse::<i32>()
            .map_err(|_| format!("{name}: {v:?} is not a number"))
    };
    for (i, (tag, _)) in tags.iter().enumerate() {
        let name = format!("q1_{i}");
        // An unticked hashtag is not sent by the browser: it means "no".
        let value = match fields.get(&name) {
            Some(v) => number(&name, v)?,
            None => 0,
        };
        questions
            .validate("q1", value)
            .map_err(|e| format!("{name} ({tag}): {e}"))?;
        answers.push(NewAnswer {
            question: questions.q1.id.clone(),
            item: i as i32,
            hashtag: Some(tag.clone()),
            value,
        });
        if let Some((k, _)) = fields.get_key_value(&name) {
            seen.insert(k.as_str());
        }
    }
    for q in [&questions.q2, &questions.q3] {
        match (fields.get_key_value(q.id.as_str()), has_story) {
            (Some((k, v)), true) => {
                let value = number(&q.id, v)?;
                questions
                    .validate(&q.id, value)
                    .map_err(|e| e.to_string())?;
                answers.push(NewAnswer {
                    question: q.id.clone(),
                    item: 0,
                    hashtag: None,
                    value,
                });
                seen.insert(k.as_str());
            }
            (None, true) => {
                return Err(format!(
                    "{}: an answer is required ({}: {})",
                    q.id,
                    q.text,
                    q.scale.labels.join(" / ")
                ))
            }
            (Some(_), false) => return Err(format!("{}: this result has no story", q.id)),
            (None, false) => {}
        }
    }
    if let Some(extra) = fields.keys().find(|k| !seen.contains(k.as_str())) {
        return Err(if extra.starts_with("q1_") {
            format!("{extra}: this result has {} hashtags", tags.len())
        } else {
            format!("unknown field {extra}")
        });
    }
    if answers.is_empty() {
        return Err("this result has neither hashtags nor a story: skip it".into());
    }
    Ok(answers)
}

/// What every rater form post checks first: the rater's token, the form's fields, that the
/// assignment is the rater's own, and the CSRF token bound to both.
async fn checked_form(
    state: &AppState,
    token: &str,
    fields: Vec<(String, String)>,
) -> PageResult<(Rater, HashMap<String, String>, Assignment)> {
    let rater = rater(state, token).await?;
    let fields = form_fields(fields)?;
    let assignment = own_assignment(state, &rater, assignment_field(&fields)?).await?;
    check_csrf(
        secret(state).await?,
        rater.id,
        assignment.id,
        fields.get("csrf").map(String::as_str),
    )?;
    Ok((rater, fields, assignment))
}

/// The rating form's fields: the item, its CSRF token, the answers; nothing else (unknown and
/// repeated fields are refused).
struct AnswerForm;

/// The skip form's fields: the item and its CSRF token.
struct SkipForm;

/// An object of exactly these properties, the first two required (`assignment`, `csrf`).
fn rating_form_schema(extra: &[(String, Schema)]) -> RefOr<Schema> {
    let mut form = ObjectBuilder::new()
        .property(
            "assignment",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(1))
                .description(Some("the item (assignment) answered")),
        )
        .required("assignment")
        .property(
            "csrf",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[0-9a-f]{64}$"))
                .description(Some(
                    "the form's CSRF token (bound to the rater and the item)",
                )),
        )
        .required("csrf")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    for (name, schema) in extra {
        form = form.property(name, schema.clone());
    }
    Schema::Object(form.build()).into()
}

impl PartialSchema for AnswerForm {
    fn schema() -> RefOr<Schema> {
        let int = |min: i64, max: Option<i64>, what: String| {
            Schema::Object(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(min))
                    .maximum(max)
                    .description(Some(what))
                    .build(),
            )
        };
        // `q1_N`: hashtag N fits the image (1) or not (0); unticked ones are omitted.
        let mut answers: Vec<(String, Schema)> = (0..MAX_HASHTAGS)
            .map(|i| {
                let what = format!("hashtag {i} fits the image: 1, or 0 (omitted: 0)");
                (format!("q1_{i}"), int(0, Some(1), what))
            })
            .collect();
        for q in ["q2", "q3"] {
            let what = "the story's answer on the question's scale (required when the item has \
                        a story, refused otherwise)";
            answers.push((q.to_string(), int(0, None, what.to_string())));
        }
        rating_form_schema(&answers)
    }
}

impl ToSchema for AnswerForm {}

impl PartialSchema for SkipForm {
    fn schema() -> RefOr<Schema> {
        rating_form_schema(&[])
    }
}

impl ToSchema for SkipForm {}

/// Answers the rater's item; back to the rating page.
#[utoipa::path(post, path = "/rate/{token}/answer", tag = "ratings", params(TokenParam),
    request_body(content = AnswerForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Saved: on to the next item", headers(("location" = String))),
        (status = 400, description = "A field missing, repeated, unknown or out of its scale", body = String, content_type = "text/html"),
        (status = 401, description = "Not a valid invite token (or revoked)", body = String, content_type = "text/html"),
        (status = 503, description = "The database is unavailable; try again", body = String, content_type = "text/html"),
        (status = 403, description = "Missing or invalid CSRF token", body = String, content_type = "text/html"),
        (status = 404, description = "The item is not assigned to this rater", body = String, content_type = "text/html"),
        (status = 409, description = "The item can no longer be changed", body = String, content_type = "text/html"),
        (status = 413, description = "Form too large", body = String, content_type = "text/html"),
        (status = 415, description = "Not a urlencoded form", body = String, content_type = "text/html"),
        (status = 422, description = "Not a parseable urlencoded form", body = String, content_type = "text/html"),
    ))]
async fn answer(
    State(state): State<AppState>,
    PagePath(token): PagePath<String>,
    PageForm(fields): PageForm<Vec<(String, String)>>,
) -> PageResult {
    let (rater, fields, assignment) = checked_form(&state, &token, fields).await?;
    let item = state.store.rating_item(&assignment).await?;
    let answers = parse_answers(
        &state.ratings.questions,
        &item.result.output,
        story_of(&item).is_some(),
        &fields,
    )
    .map_err(PageError::bad)?;
    match state
        .store
        .submit_rating(rater.id, assignment.id, &answers, state.ratings.sampling.k)
        .await?
    {
        SubmitOutcome::Saved => Ok(Redirect::to(&format!("/rate/{token}")).into_response()),
        SubmitOutcome::NotYours => Err(PageError::new(
            StatusCode::NOT_FOUND,
            "this item is not assigned to you",
        )),
        SubmitOutcome::Closed(why) => Err(PageError::new(StatusCode::CONFLICT, why)),
    }
}

/// Skips the rater's current item.
#[utoipa::path(post, path = "/rate/{token}/skip", tag = "ratings", params(TokenParam),
    request_body(content = SkipForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Skipped: on to the next item", headers(("location" = String))),
        (status = 400, description = "A field missing, repeated or unknown", body = String, content_type = "text/html"),
        (status = 401, description = "Not a valid invite token (or revoked)", body = String, content_type = "text/html"),
        (status = 503, description = "The database is unavailable; try again", body = String, content_type = "text/html"),
        (status = 403, description = "Missing or invalid CSRF token", body = String, content_type = "text/html"),
        (status = 404, description = "The item is not assigned to this rater", body = String, content_type = "text/html"),
        (status = 409, description = "Only the current item can be skipped", body = String, content_type = "text/html"),
        (status = 413, description = "Form too large", body = String, content_type = "text/html"),
        (status = 415, description = "Not a urlencoded form", body = String, content_type = "text/html"),
        (status = 422, description = "Not a parseable urlencoded form", body = String, content_type = "text/html"),
    ))]
async fn skip(
    State(state): State<AppState>,
    PagePath(token): PagePath<String>,
    PageForm(fields): PageForm<Vec<(String, String)>>,
) -> PageResult {
    let (rater, fields, assignment) = checked_form(&state, &token, fields).await?;
    if let Some(extra) = fields
        .keys()
        .find(|k| !matches!(k.as_str(), "assignment" | "csrf"))
    {
        return Err(PageError::bad(format!("unknown field {extra}")));
    }
    if !state
        .store
        .skip_rating_assignment(rater.id, assignment.id)
        .await?
    {
        return Err(PageError::new(
            StatusCode::CONFLICT,
            "only the item you are looking at can be skipped",
        ));
    }
    Ok(Redirect::to(&format!("/rate/{token}")).into_response())
}

/// The image of an item assigned to the rater (fetched by the server for URL posts).
#[utoipa::path(get, path = "/rate/{token}/image/{result_id}", tag = "ratings",
    params(
        TokenParam,
        ("result_id" = i64, Path, description = "the item's result id", minimum = 1, maximum = 9223372036854775807_i64),
    ),
    responses(
        (status = 200, description = "The image", content_type = "image/*"),
        (status = 400, description = "The result id is not a number from 1 to 2^63-1", body = String, content_type = "text/html"),
        (status = 401, description = "Not a valid invite token (or revoked)", body = String, content_type = "text/html"),
        (status = 503, description = "The database is unavailable; try again", body = String, content_type = "text/html"),
        (status = 404, description = "Not assigned to this rater, or no image", body = String, content_type = "text/html"),
        (status = 502, description = "The image could not be fetched, or is not an image", body = String, content_type = "text/html"),
    ))]
async fn image(
    State(state): State<AppState>,
    PagePath(path): PagePath<(String, Id)>,
) -> PageResult {
    let (token, Id(result_id)) = path;
    let rater = rater(&state, &token).await?;
    let assignment = state
        .store
        .rater_assignment_for_result(rater.id, result_id)
        .await?
        .filter(|a| a.state != assignment_state::SKIPPED)
        .ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, "this item is not assigned to you"))?;
    let item = state.store.rating_item(&assignment).await?;
    let bytes = match (&item.image_sha256, &item.image_url) {
        (Some(sha), _) => state
            .store
            .blob(sha)
            .await?
            .ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, "the image is missing"))?,
        // Fetched through the safe fetcher rather than linked: the rater's browser never
        // contacts third parties, and the CSP can stay `img-src 'self'`.
        (None, Some(url)) => state.fetcher.fetch_image(url).await.map_err(|e| {
            PageError::new(StatusCode::BAD_GATEWAY, format!("fetching the image: {e}"))
        })?,
        (None, None) => return Err(PageError::new(StatusCode::NOT_FOUND, "no image")),
    };
    let mime = hashtale_fetch::sniff(&bytes)
        .map_err(|_| PageError::new(StatusCode::BAD_GATEWAY, "the stored image is not an image"))?
        .to_mime_type();
    Ok((
        [
            (header::CONTENT_TYPE, mime.to_string()),
            (header::CACHE_CONTROL, "private, max-age=600".to_string()),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'".to_string(),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// The rating page's script.
#[utoipa::path(get, path = "/static/rate.js", tag = "ratings",
    responses((status = 200, description = "JavaScript", body = String, content_type = "text/javascript")))]
async fn static_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../static/rate.js"),
    )
        .into_response()
}

/// The rating and admin pages' style sheet.
#[utoipa::path(get, path = "/static/rate.css", tag = "ratings",
    responses((status = 200, description = "CSS", body = String, content_type = "text/css")))]
async fn static_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../static/rate.css"),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Admin

fn admin_hash(state: &AppState) -> PageResult<TokenHash> {
    state.ratings.admin_hash.ok_or_else(|| {
        PageError::new(
            StatusCode::FORBIDDEN,
            "the admin pages are disabled: set ratings.admin_token (or api.token)",
        )
    })
}

/// The fields an admin session signs: the admin token (as its hash: a new token ends every
/// session) and the expiry.
fn admin_session_tag(secret: &[u8], admin: &TokenHash, expiry_ms: i64) -> [u8; 32] {
    let (hash, expiry) = (hex::encode(admin.as_bytes()), expiry_ms.to_string());
    hmac_sha256_parts(secret, &[b"admin", hash.as_bytes(), expiry.as_bytes()])
}

/// `{expiry_ms}.{hex hmac}` for an admin session ending at `expiry_ms`.
fn admin_session_value(secret: &[u8], admin: &TokenHash, expiry_ms: i64) -> String {
    let tag = admin_session_tag(secret, admin, expiry_ms);
    format!("{expiry_ms}.{}", hex::encode(tag))
}

/// Admin access: `Authorization: Bearer <token>` or a valid session cookie; 401 otherwise.
async fn require_admin(state: &AppState, headers: &HeaderMap) -> PageResult<()> {
    let expected = admin_hash(state)?;
    match check_bearer(&expected, headers) {
        Presented::Valid => return Ok(()),
        // A wrong token is refused even beside a valid cookie: the caller meant the header.
        Presented::Invalid => {
            return Err(PageError::new(
                StatusCode::UNAUTHORIZED,
                "wrong admin token",
            ))
        }
        Presented::Nothing => {}
    }
    let jar = CookieJar::from_headers(headers);
    if let Some(cookie) = jar.get(ADMIN_COOKIE) {
        let secret = secret(state).await?;
        let valid = cookie
            .value()
            .split_once('.')
            .and_then(|(exp, tag)| Some((exp.parse::<i64>().ok()?, hex::decode(tag).ok()?)))
            .filter(|(exp, _)| *exp > now_ms())
            .is_some_and(|(exp, tag)| {
                let want = admin_session_tag(secret, &expected, exp);
                bool::from(want.as_slice().ct_eq(tag.as_slice()))
            });
        if valid {
            return Ok(());
        }
    }
    Err(PageError::new(
        StatusCode::UNAUTHORIZED,
        "sign in at /admin/login, or send Authorization: Bearer <admin token>",
    ))
}

/// The sign-in form.
#[utoipa::path(get, path = "/admin/login", tag = "admin",
    responses(
        (status = 200, description = "The sign-in form", body = String, content_type = "text/html"),
        (status = 403, description = "The admin pages are disabled", body = String, content_type = "text/html"),
        (status = 503, description = "The database is unavailable; try again", body = String, content_type = "text/html"),
    ))]
async fn login_page(State(state): State<AppState>) -> PageResult {
    admin_hash(&state)?;
    Ok(html(StatusCode::OK, render("login.html", context! {})?))
}

/// Longest admin token the sign-in form takes (the form field's `maxlength`).
pub(crate) const MAX_ADMIN_TOKEN_CHARS: usize = 512;

/// The sign-in form's fields.
#[derive(Deserialize, ToSchema)]
struct LoginForm {
    /// The admin token (`ratings.admin_token`, or `api.token`).
    #[serde(default)]
    #[schema(max_length = 512)]
    token: String,
}

/// Signs in with the admin token: sets the session cookie (never the token itself).
#[utoipa::path(post, path = "/admin/login", tag = "admin",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed in: the session cookie is set; on to /admin/ratings",
            headers(("location" = String), ("set-cookie" = String, description = "hashtale_admin=…; Path=/admin; HttpOnly; SameSite=Strict"))),
        (status = 400, description = "Token longer than 512 characters", body = String, content_type = "text/html"),
        (status = 401, description = "Wrong admin token", body = String, content_type = "text/html"),
        (status = 403, description = "The admin pages are disabled", body = String, content_type = "text/html"),
        (status = 503, description = "The database is unavailable; try again", body = String, content_type = "text/html"),
        (status = 413, description = "Form too large", body = String, content_type = "text/html"),
        (status = 415, description = "Not a urlencoded form", body = String, content_type = "text/html"),
        (status = 422, description = "Not a parseable urlencoded form", body = String, content_type = "text/html"),
    ))]
async fn login(
    State(state): State<AppState>,
    jar: CookieJar,
    PageForm(f): PageForm<LoginForm>,
) -> PageResult {
    let expected = admin_hash(&state)?;
    if f.token.chars().count() > MAX_ADMIN_TOKEN_CHARS {
        return Err(PageError::bad(format!(
            "token: at most {MAX_ADMIN_TOKEN_CHARS} characters"
        )));
    }
    if !expected.matches(&f.token) {
        let body = render("login.html", context! { error => "Wrong admin token." })?;
        return Ok(html(StatusCode::UNAUTHORIZED, body));
    }
    let expiry = now_ms() + ADMIN_SESSION.as_millis() as i64;
    let value = admin_session_value(secret(&state).await?, &expected, expiry);
    let cookie = Cookie::build((ADMIN_COOKIE, value))
        .path("/admin")
        .http_only(true)
        .same_site(SameSite::Strict)
        .max_age(
            ADMIN_SESSION
                .try_into()
                .map_err(|_| PageError::internal())?,
        )
        .secure(state.ratings.secure_cookie);
    Ok((jar.add(cookie), Redirect::to("/admin/ratings")).into_response())
}

/// Longest model version the admin pages filter on (model versions are short names).
pub(crate) const MAX_MODEL_VERSION_CHARS: usize = 200;

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct VersionQuery {
    /// Only this model version (empty: all).
    #[serde(default)]
    #[param(max_length = 200)]
    model_version: Option<String>,
}

impl VersionQuery {
    fn version(&self) -> Option<&str> {
        self.model_version.as_deref().filter(|v| !v.is_empty())
    }

    /// The query string to pass on to the page's links.
    fn query(&self) -> String {
        self.version()
            .map(|v| {
                let enc = form_urlencoded::Serializer::new(String::new())
                    .append_pair("model_version", v)
                    .finish();
                format!("?{enc}")
            })
            .unwrap_or_default()
    }

    fn checked(self) -> PageResult<Self> {
        match &self.model_version {
            Some(v) if v.chars().count() > MAX_MODEL_VERSION_CHARS => Err(PageError::bad(format!(
                "model_version: at most {MAX_MODEL_VERSION_CHARS} characters"
            ))),
            _ => Ok(self),
        }
    }
}

async fn report(state: &AppState, q: &VersionQuery) -> PageResult<Report> {
    let rows = state.store.rating_rows(q.version()).await?;
    Ok(Report::build(&rows, &state.ratings.questions))
}

/// What every admin route checks first: access, then the query.
async fn admin_query(
    state: &AppState,
    headers: &HeaderMap,
    q: PageResult<VersionQuery>,
) -> PageResult<VersionQuery> {
    require_admin(state, headers).await?;
    q?.checked()
}

/// The admin page: progress, raters, the report.
#[utoipa::path(get, path = "/admin/ratings", tag = "admin", params(VersionQuery),
    security(("bearer" = []), ("admin_session" = [])),
    responses(
        (status = 200, description = "The admin page", body = String, content_type = "text/html"),
        (status = 400, description = "model_version repeated or too long", body = String, content_type = "text/html"),
        (status = 401, description = "No or wrong admin token or session", body = String, content_type = "text/html"),
        (status = 403, description = "The admin pages are disabled", body = String, content_type = "text/html"),
        (status = 503, description = "The database is unavailable; try again", body = String, content_type = "text/html"),
    ))]
async fn admin_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<PageQuery<VersionQuery>, PageError>,
) -> PageResult {
    let q = admin_query(&state, &headers, q.map(|PageQuery(q)| q)).await?;
    sync_slots(&state, true).await?;
    let report = report(&state, &q).await?;
    let progress = state
        .store
        .rating_progress(state.ratings.sampling.k)
        .await?;
    let raters: Vec<_> = state
        .store
        .raters()
        .await?
        .into_iter()
        .map(|r| {
            context! {
                id => r.rater.id, name => r.rater.name, revoked_at => r.rater.revoked_at,
                answered => r.answered, skipped => r.skipped, open => r.open,
            }
        })
        .collect();
    let body = render(
        "admin.html",
        context! {
            model_version => q.version().unwrap_or(""),
            query => q.query(),
            k => state.ratings.sampling.k,
            progress,
            report_text => report.to_text(),
            raters,
        },
    )?;
    Ok(html(StatusCode::OK, body))
}

/// Human-rating report per model version (see docs/ratings.md).
#[utoipa::path(get, path = "/admin/ratings/report.json", tag = "admin", params(VersionQuery),
    security(("bearer" = []), ("admin_session" = [])),
    responses(
        (status = 200, description = "The report", body = Object),
        (status = 400, description = "model_version repeated or too long", body = String, content_type = "text/html"),
        (status = 401, description = "No or wrong admin token or session", body = String, content_type = "text/html"),
        (status = 403, description = "The admin pages are disabled", body = String, content_type = "text/html"),
        (status = 503, description = "The database is unavailable; try again", body = String, content_type = "text/html"),
    ))]
async fn admin_report_json(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<PageQuery<VersionQuery>, PageError>,
) -> PageResult {
    let q = admin_query(&state, &headers, q.map(|PageQuery(q)| q)).await?;
    Ok(axum::Json(report(&state, &q).await?).into_response())
}

/// The answers' distribution per question, as SVG.
#[utoipa::path(get, path = "/admin/ratings/chart.svg", tag = "admin", params(VersionQuery),
    security(("bearer" = []), ("admin_session" = [])),
    responses(
        (status = 200, description = "The chart", body = String, content_type = "image/svg+xml"),
        (status = 400, description = "model_version repeated or too long", body = String, content_type = "text/html"),
        (status = 401, description = "No or wrong admin token or session", body = String, content_type = "text/html"),
        (status = 403, description = "The admin pages are disabled", body = String, content_type = "text/html"),
        (status = 503, description = "The database is unavailable; try again", body = String, content_type = "text/html"),
    ))]
async fn admin_chart(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<PageQuery<VersionQuery>, PageError>,
) -> PageResult {
    let q = admin_query(&state, &headers, q.map(|PageQuery(q)| q)).await?;
    let svg = distribution_svg(&report(&state, &q).await?, &state.ratings.questions);
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml; charset=utf-8"),
            // Styles inside the SVG only; no script can run in it.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        svg,
    )
        .into_response())
}

async fn admin_export(
    state: &AppState,
    headers: &HeaderMap,
    q: PageResult<VersionQuery>,
    format: export::ExportFormat,
) -> PageResult {
    let q = admin_query(state, headers, q).await?;
    let rows = state.store.rating_rows(q.version()).await?;
    let mut out = Vec::new();
    export::write(format, &rows, &mut out).map_err(|e| {
        tracing::error!("export: {e}");
        PageError::internal()
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"ratings.{}\"", format.extension()),
            ),
        ],
        out,
    )
        .into_response())
}

/// Every rating answer as CSV.
#[utoipa::path(get, path = "/admin/ratings/export.csv", tag = "admin", params(VersionQuery),
    security(("bearer" = []), ("admin_session" = [])),
    responses(
        (status = 200, description = "The answers", body = String, content_type = "text/csv"),
        (status = 400, description = "model_version repeated or too long", body = String, content_type = "text/html"),
        (status = 401, description = "No or wrong admin token or session", body = String, content_type = "text/html"),
        (status = 403, description = "The admin pages are disabled", body = String, content_type = "text/html"),
        (status = 503, description = "The database is unavailable; try again", body = String, content_type = "text/html"),
    ))]
async fn admin_export_csv(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<PageQuery<VersionQuery>, PageError>,
) -> PageResult {
    let q = q.map(|PageQuery(q)| q);
    admin_export(&state, &headers, q, export::ExportFormat::Csv).await
}

/// Every rating answer as JSON Lines.
#[utoipa::path(get, path = "/admin/ratings/export.jsonl", tag = "admin", params(VersionQuery),
    security(("bearer" = []), ("admin_session" = [])),
    responses(
        (status = 200, description = "The answers", body = String, content_type = "application/jsonl"),
        (status = 400, description = "model_version repeated or too long", body = String, content_type = "text/html"),
        (status = 401, description = "No or wrong admin token or session", body = String, content_type = "text/html"),
        (status = 403, description = "The admin pages are disabled", body = String, content_type = "text/html"),
        (status = 503, description = "The database is unavailable; try again", body = String, content_type = "text/html"),
    ))]
async fn admin_export_jsonl(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<PageQuery<VersionQuery>, PageError>,
) -> PageResult {
    let q = q.map(|PageQuery(q)| q);
    admin_export(&state, &headers, q, export::ExportFormat::Jsonl).await
}
