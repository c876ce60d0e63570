//! The admin pages: sign-in, the report (HTML and JSON), the chart and the exports.
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum_extra::extract::cookie::CookieJar;
use hashtale_ratings::{distribution_svg, export, Report};
use minijinja::context;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::rater::sync_slots;
use super::session::{admin_hash, require_admin, session_cookie};
use super::views::{html, render, PageError, PageResult};
use crate::params::{PageForm, PageQuery};
use crate::AppState;

/// The sign-in form.
#[utoipa::path(get, path = "/admin/login", tag = "admin",
    responses(
        (status = 200, description = "The sign-in form", body = String, content_type = "text/html"),
        (status = 403, description = "The admin pages are disabled", body = String, content_type = "text/html"),
        (status = 503, description = "The database is unavailable; try again", body = String, content_type = "text/html"),
    ))]
pub(super) async fn login_page(State(state): State<AppState>) -> PageResult {
    admin_hash(&state)?;
    Ok(html(StatusCode::OK, render("login.html", context! {})?))
}

/// Longest admin token the sign-in form takes (the form field's `maxlength`).
pub(crate) const MAX_ADMIN_TOKEN_CHARS: usize = 512;

/// The sign-in form's fields.
#[derive(Deserialize, ToSchema)]
pub(super) struct LoginForm {
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
pub(super) async fn login(
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
    let cookie = session_cookie(&state, &expected).await?;
    Ok((jar.add(cookie), Redirect::to("/admin/ratings")).into_response())
}

/// Longest model version the admin pages filter on (model versions are short names).
pub(crate) const MAX_MODEL_VERSION_CHARS: usize = 200;

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct VersionQuery {
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

/// The error pages every admin report route can answer with (documented once, listed by each).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Describes responses only; the pages are `PageError`s.
enum AdminReportErrors {
    #[response(
        status = 400,
        description = "model_version repeated or too long",
        content_type = "text/html"
    )]
    BadQuery(String),
    #[response(
        status = 401,
        description = "No or wrong admin token or session",
        content_type = "text/html"
    )]
    Unauthorized(String),
    #[response(
        status = 403,
        description = "The admin pages are disabled",
        content_type = "text/html"
    )]
    Disabled(String),
    #[response(
        status = 503,
        description = "The database is unavailable; try again",
        content_type = "text/html"
    )]
    Unavailable(String),
}

/// The admin page: progress, raters, the report.
#[utoipa::path(get, path = "/admin/ratings", tag = "admin", params(VersionQuery),
    security(("bearer" = []), ("admin_session" = [])),
    responses(
        (status = 200, description = "The admin page", body = String, content_type = "text/html"),
        AdminReportErrors,
    ))]
pub(super) async fn admin_page(
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
        AdminReportErrors,
    ))]
pub(super) async fn admin_report_json(
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
        AdminReportErrors,
    ))]
pub(super) async fn admin_chart(
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
        AdminReportErrors,
    ))]
pub(super) async fn admin_export_csv(
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
        AdminReportErrors,
    ))]
pub(super) async fn admin_export_jsonl(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<PageQuery<VersionQuery>, PageError>,
) -> PageResult {
    let q = q.map(|PageQuery(q)| q);
    admin_export(&state, &headers, q, export::ExportFormat::Jsonl).await
}
