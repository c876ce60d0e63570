//! What the pages show: the templates, the HTML error page, the rating form's view (and the
//! small helpers it shares with the answer check), and the pages' script and style sheet.
use std::collections::HashMap;
use std::sync::OnceLock;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hashtale_core::Error;
use hashtale_store::ratings::{Rater, RatingItem};
use minijinja::context;
use serde::Serialize;

use super::csrf::csrf_token;
use super::secret;
use crate::AppState;

/// Most hashtags asked about per result (bounds the form).
pub(super) const MAX_HASHTAGS: usize = 30;

fn templates() -> &'static minijinja::Environment<'static> {
    static ENV: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        for (name, src) in [
            ("layout.html", include_str!("../../templates/layout.html")),
            ("message.html", include_str!("../../templates/message.html")),
            ("done.html", include_str!("../../templates/done.html")),
            ("rate.html", include_str!("../../templates/rate.html")),
            ("login.html", include_str!("../../templates/login.html")),
            ("admin.html", include_str!("../../templates/admin.html")),
        ] {
            env.add_template(name, src)
                .expect("the built-in templates parse");
        }
        env
    })
}

pub(super) fn render(name: &str, ctx: minijinja::Value) -> Result<String, PageError> {
    templates()
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| {
            tracing::error!("rendering {name}: {e:#}");
            PageError::internal()
        })
}

pub(super) fn html(status: StatusCode, body: String) -> Response {
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
    pub(super) fn bad(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }
    pub(super) fn internal() -> Self {
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

pub(super) type PageResult<T = Response> = Result<T, PageError>;

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
pub(super) fn hashtags_of(output: &hashtale_types::ImageResult) -> Vec<(String, Option<Vec<f32>>)> {
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
pub(super) fn story_of(item: &RatingItem) -> Option<String> {
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

pub(super) async fn render_item(
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

// ---------------------------------------------------------------------------------------------
// Static assets

/// The rating page's script.
#[utoipa::path(get, path = "/static/rate.js", tag = "ratings",
    responses((status = 200, description = "JavaScript", body = String, content_type = "text/javascript")))]
pub(super) async fn static_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/rate.js"),
    )
        .into_response()
}

/// The rating and admin pages' style sheet.
#[utoipa::path(get, path = "/static/rate.css", tag = "ratings",
    responses((status = 200, description = "CSS", body = String, content_type = "text/css")))]
pub(super) async fn static_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/rate.css"),
    )
        .into_response()
}
