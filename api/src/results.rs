//! The reads: `GET /v1/posts/{id}`, `GET /v1/jobs/{id}`, `GET /v1/results`.
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hashtale_store::{JobRow, PostRow, ResultRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::params::{ApiPath, ApiQuery, Id, Limit, NonNegative};
use crate::{ApiError, ApiResult, AppState, ErrorBody};

/// A post with its job and results.
#[derive(Serialize, ToSchema)]
pub(crate) struct PostView {
    post: PostRow,
    job: Option<JobRow>,
    results: Vec<ResultRow>,
}

/// A page of results.
#[derive(Serialize, ToSchema)]
pub(crate) struct ResultsPage {
    results: Vec<ResultRow>,
    /// The `after` of the next page; null on the last page.
    next_after: Option<i64>,
}

/// A post with its job and results.
#[utoipa::path(
    get,
    path = "/v1/posts/{id}",
    tag = "reads",
    params(("id" = i64, Path, description = "post id", minimum = 1, maximum = 9223372036854775807_i64)),
    responses(
        (status = 200, description = "The post", body = PostView),
        (status = 400, description = "The id is not a number from 1 to 2^63-1", body = ErrorBody),
        (status = 404, description = "No such post", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn get_post(
    State(state): State<AppState>,
    ApiPath(Id(id)): ApiPath<Id>,
) -> ApiResult<Response> {
    let Some(mut post) = state.store.post(id).await? else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no post {id}")));
    };
    let job = state.store.job_for_post(id).await?;
    let results = state.store.results_for_post(id).await?;
    post.source = public_source(&post.source);
    Ok(Json(PostView { post, job, results }).into_response())
}

/// A job's state, attempts and last error.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "reads",
    params(("id" = i64, Path, description = "job id", minimum = 1, maximum = 9223372036854775807_i64)),
    responses(
        (status = 200, description = "The job", body = JobRow),
        (status = 400, description = "The id is not a number from 1 to 2^63-1", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn get_job(
    State(state): State<AppState>,
    ApiPath(Id(id)): ApiPath<Id>,
) -> ApiResult<Response> {
    match state.store.job(id).await? {
        Some(j) => Ok(Json(j).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no job {id}"))),
    }
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

/// The query of `/v1/results`; each parameter at most once.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ResultsQuery {
    /// Results created at or after this time (ms since the Unix epoch).
    #[serde(default)]
    #[param(value_type = Option<i64>, minimum = 0, maximum = 9223372036854775807_i64)]
    since: NonNegative,
    /// Id cursor: `next_after` of the previous page.
    #[serde(default)]
    #[param(value_type = Option<i64>, minimum = 0, maximum = 9223372036854775807_i64)]
    after: NonNegative,
    /// Page size.
    #[serde(default)]
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000, default = 100)]
    limit: Limit,
}

/// Results, oldest first, paged by id.
#[utoipa::path(
    get,
    path = "/v1/results",
    tag = "reads",
    params(ResultsQuery),
    responses(
        (status = 200, description = "A page", body = ResultsPage),
        (status = 400, description = "A parameter is not a number, out of bounds, or repeated", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn list_results(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ResultsQuery>,
) -> ApiResult<Response> {
    let limit = q.limit.0;
    let rows = state
        .store
        .results_page(q.since.0, q.after.0, limit)
        .await?;
    let next_after = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(ResultsPage {
        results: rows,
        next_after,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn public_source_hides_server_paths_and_credentials() {
        assert_eq!(super::public_source("dir:/srv/photos/in"), "dir:in");
        assert_eq!(
            super::public_source("feed:https://bob:secret@example.com/f.xml"),
            "feed:https://example.com/f.xml"
        );
        assert_eq!(super::public_source("api:default"), "api:default");
    }
}
