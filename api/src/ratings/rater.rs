//! The rater pages behind a per-rater invite link (`/rate/{token}`): the current item, the
//! previous one, answering, skipping, the item's image; and the rater tokens themselves.
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect};
use base64::Engine;
use hashtale_core::config::Config;
use hashtale_ratings::QuestionSet;
use hashtale_store::ratings::{assignment_state, Assignment, NewAnswer, Rater, SubmitOutcome};
use hashtale_store::sha256_hex;
use hashtale_store::Store;
use minijinja::context;
use rand::RngCore;
use serde::Deserialize;
use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};

use super::csrf::check_csrf;
use super::secret;
use super::views::{
    hashtags_of, html, render, render_item, story_of, PageError, PageResult, MAX_HASHTAGS,
};
use crate::params::{Id, PageForm, PagePath};
use crate::AppState;

/// How often new results are made rateable while raters are busy (also done whenever a rater
/// would otherwise be told that nothing is left).
const SLOT_SYNC_EVERY: Duration = Duration::from_secs(5);

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

/// Makes new results rateable: at most every few seconds, or now when `force`.
pub(super) async fn sync_slots(state: &AppState, force: bool) -> PageResult<()> {
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

/// The error pages every route under a rater's token can answer with (documented once, listed
/// by each).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Describes responses only; the pages are `PageError`s.
enum RaterTokenErrors {
    #[response(
        status = 401,
        description = "Not a valid invite token (or revoked)",
        content_type = "text/html"
    )]
    Unauthorized(String),
    #[response(
        status = 503,
        description = "The database is unavailable; try again",
        content_type = "text/html"
    )]
    Unavailable(String),
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
        RaterTokenErrors,
    ))]
pub(super) async fn rate_page(
    State(state): State<AppState>,
    PagePath(token): PagePath<String>,
) -> PageResult {
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
        RaterTokenErrors,
        (status = 404, description = "Nothing answered yet", body = String, content_type = "text/html"),
    ))]
pub(super) async fn previous_page(
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
        RaterTokenErrors,
        (status = 403, description = "Missing or invalid CSRF token", body = String, content_type = "text/html"),
        (status = 404, description = "The item is not assigned to this rater", body = String, content_type = "text/html"),
        (status = 409, description = "The item can no longer be changed", body = String, content_type = "text/html"),
        (status = 413, description = "Form too large", body = String, content_type = "text/html"),
        (status = 415, description = "Not a urlencoded form", body = String, content_type = "text/html"),
        (status = 422, description = "Not a parseable urlencoded form", body = String, content_type = "text/html"),
    ))]
pub(super) async fn answer(
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
        RaterTokenErrors,
        (status = 403, description = "Missing or invalid CSRF token", body = String, content_type = "text/html"),
        (status = 404, description = "The item is not assigned to this rater", body = String, content_type = "text/html"),
        (status = 409, description = "Only the current item can be skipped", body = String, content_type = "text/html"),
        (status = 413, description = "Form too large", body = String, content_type = "text/html"),
        (status = 415, description = "Not a urlencoded form", body = String, content_type = "text/html"),
        (status = 422, description = "Not a parseable urlencoded form", body = String, content_type = "text/html"),
    ))]
pub(super) async fn skip(
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
        RaterTokenErrors,
        (status = 404, description = "Not assigned to this rater, or no image", body = String, content_type = "text/html"),
        (status = 502, description = "The image could not be fetched, or is not an image", body = String, content_type = "text/html"),
    ))]
pub(super) async fn image(
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
        (None, Some(url)) => state
            .ingestor
            .fetcher()
            .fetch_image(url)
            .await
            .map_err(|e| {
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
