//! `POST /v1/posts`: an image by URL, base64 or multipart upload, checked, committed and queued.
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hashtale_core::Error;
use hashtale_ingest::PostDraft;
use hashtale_types::ImageSource;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{AllOfBuilder, Object, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::auth::RequireToken;
use crate::params::ApiJson;
use crate::{ApiError, ApiResult, AppState, ErrorBody};

// The lengths are the ingest checks' (`MAX_SOURCE_CHARS`, `MAX_EXTERNAL_ID_CHARS`,
// `MAX_CAPTION_CHARS`); utoipa takes literals only, so a test compares them.

/// The fields of `POST /v1/posts`'s JSON body (see [`NewPost`]).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = NewPostFields)]
pub struct PostBody {
    /// The sender's name for its source (default `default`).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub source: Option<String>,
    /// The sender's id of the post (default: the image URL, or the bytes' SHA-256); a known
    /// (source, external_id) is not processed again.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 500)]
    pub external_id: Option<String>,
    /// An http(s) URL of a public host; the worker fetches it.
    #[serde(default)]
    #[schema(pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]")]
    pub image_url: Option<String>,
    /// The image's bytes, base64 (standard alphabet, padded).
    #[serde(default)]
    #[schema(content_encoding = "base64")]
    pub image_base64: Option<String>,
    #[serde(default)]
    #[schema(max_length = 2200)]
    pub caption: Option<String>,
}

/// JSON body of `POST /v1/posts`: [`PostBody`]'s fields, with exactly one of `image_url` and
/// `image_base64` (a derived schema cannot say that).
pub(crate) struct NewPost;

impl PartialSchema for NewPost {
    fn schema() -> RefOr<Schema> {
        let present = |field: &str| {
            ObjectBuilder::new()
                .required(field)
                .property(field, Object::with_type(Type::String))
                .build()
        };
        AllOfBuilder::new()
            .item(Ref::from_schema_name(PostBody::name()))
            .item(
                OneOfBuilder::new()
                    .item(present("image_url"))
                    .item(present("image_base64")),
            )
            .description(Some(
                "A post: exactly one of `image_url` and `image_base64`.",
            ))
            .into()
    }
}

impl ToSchema for NewPost {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((PostBody::name().into(), PostBody::schema()));
        <PostBody as ToSchema>::schemas(schemas);
    }
}

/// Multipart body of `POST /v1/posts`: the image as `file`, or `image_url`.
#[derive(ToSchema)]
#[allow(dead_code)] // Only describes the form: the fields are read one by one.
pub(crate) struct PostForm {
    /// The image file (also accepted as `image`).
    #[schema(value_type = Option<String>, format = Binary)]
    file: Option<Vec<u8>>,
    /// An http(s) URL of a public host; an empty field counts as absent (as HTML forms send
    /// it beside a file).
    #[schema(pattern = "^([Hh][Tt][Tt][Pp][Ss]?://[^/?#].*)?$")]
    image_url: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    source: Option<String>,
    #[schema(min_length = 1, max_length = 500)]
    external_id: Option<String>,
    #[schema(max_length = 2200)]
    caption: Option<String>,
}

/// The answer to a post.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Accepted {
    #[schema(minimum = 1)]
    post_id: i64,
    /// The post's job (0 when it could not be read back after the commit).
    #[schema(minimum = 0)]
    job_id: i64,
    /// Whether the post was new (it made the job).
    new: bool,
    /// The job is with the queue; false: the broker is away, the post is stored and its job is
    /// queued once the broker is back.
    queued: bool,
}

/// Submit an image (URL, base64 or multipart upload); returns its job.
#[utoipa::path(
    post,
    path = "/v1/posts",
    tag = "posts",
    security(("bearer" = [])),
    request_body(content(
        (NewPost = "application/json"),
        (PostForm = "multipart/form-data"),
    )),
    responses(
        (status = 202, description = "New post stored; its job is queued (`queued: true`) or will be once the broker is back (`queued: false`)", body = Accepted),
        (status = 200, description = "The post was already known: its job", body = Accepted),
        (status = 400, description = "Malformed body, missing or both image fields, bad base64, a URL that is not http(s) or names a private address, a field too long", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 403, description = "Writes are disabled: no api.token is configured", body = ErrorBody),
        (status = 413, description = "Larger than api.max_upload_bytes", body = ErrorBody),
        (status = 415, description = "Neither JSON nor multipart, or the bytes are not an image", body = ErrorBody),
        (status = 422, description = "JSON of the wrong shape (a field of the wrong type)", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again (a retry of a post that did get stored answers 200)", body = ErrorBody),
    )
)]
pub(crate) async fn create_post(
    State(state): State<AppState>,
    _token: RequireToken,
    req: Request,
) -> ApiResult<Response> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let draft = if ct.starts_with("multipart/form-data") {
        let mp = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError(e.status(), e.body_text()))?;
        from_multipart(mp).await?
    } else if ct.starts_with("application/json") {
        let ApiJson(b) = ApiJson::<PostBody>::from_request(req, &()).await?;
        from_json(b)?
    } else {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/json or multipart/form-data".into(),
        ));
    };
    let post = state.ingestor.check("api", draft)?;
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
    let body = Accepted {
        post_id: submitted.post_id,
        job_id: submitted.job_id,
        new: submitted.new,
        queued: submitted.queued,
    };
    Ok((status, Json(body)).into_response())
}

fn from_json(b: PostBody) -> ApiResult<PostDraft> {
    Ok(PostDraft::from_fields(
        b.source,
        b.external_id,
        b.image_url,
        b.image_base64,
        b.caption,
    )?)
}

async fn from_multipart(mut mp: Multipart) -> ApiResult<PostDraft> {
    let (mut source, mut external_id, mut caption, mut bytes, mut url) =
        (None, None, None, None, None);
    let bad = |e: axum::extract::multipart::MultipartError| ApiError(e.status(), e.body_text());
    while let Some(field) = mp.next_field().await.map_err(bad)? {
        match field.name().unwrap_or("") {
            "file" | "image" => bytes = Some(field.bytes().await.map_err(bad)?.to_vec()),
            // A form with both inputs sends the URL input even when it is left empty.
            "image_url" => url = Some(field.text().await.map_err(bad)?).filter(|u| !u.is_empty()),
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
    Ok(PostDraft {
        source,
        external_id,
        image,
        caption,
    })
}
