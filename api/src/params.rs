//! Extractors whose rejections answer in the route's own format (JSON for `/v1/*`, HTML for the
//! rating pages) rather than axum's plain text, and the bounded parameter types they parse.
use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use serde::Deserialize;

use crate::ratings::PageError;
use crate::ApiError;

/// A path parameter; a malformed one (not a number, an id past `i64`) is a JSON 400.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct ApiPath<T>(pub T);

/// A query string; malformed, out of bounds or repeated parameters are a JSON 400.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(crate) struct ApiQuery<T>(pub T);

/// A JSON body; its errors (syntax 400, types 422, size 413, content type 415) as JSON.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct ApiJson<T>(pub T);

/// [`ApiPath`] for the rating pages (errors as the HTML message page).
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(PageError))]
pub(crate) struct PagePath<T>(pub T);

/// [`ApiQuery`] for the rating pages.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(PageError))]
pub(crate) struct PageQuery<T>(pub T);

/// A urlencoded form of the rating pages; wrong content type 415, too large 413, as HTML.
#[derive(FromRequest)]
#[from_request(via(axum::Form), rejection(PageError))]
pub(crate) struct PageForm<T>(pub T);

macro_rules! rejection_into {
    ($target:ident, $($rejection:ty),+) => {$(
        impl From<$rejection> for $target {
            fn from(r: $rejection) -> Self {
                $target::new(r.status(), r.body_text())
            }
        }
    )+};
}
rejection_into!(ApiError, PathRejection, QueryRejection, JsonRejection);
rejection_into!(PageError, PathRejection, QueryRejection, FormRejection);

/// A row id: 1 to `i64::MAX` (ids start at 1; 0, negatives and larger numbers are a 400).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "i64")]
pub(crate) struct Id(pub i64);

impl TryFrom<i64> for Id {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        if v >= 1 {
            Ok(Id(v))
        } else {
            Err(format!("{v} is not an id (ids are 1 or more)"))
        }
    }
}

/// A number that may not be negative (timestamps, cursors).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(try_from = "i64")]
pub(crate) struct NonNegative(pub i64);

impl TryFrom<i64> for NonNegative {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        if v >= 0 {
            Ok(NonNegative(v))
        } else {
            Err(format!("{v} is negative"))
        }
    }
}

/// Page size of `/v1/results`: [`Limit::MIN`] to [`Limit::MAX`].
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "i64")]
pub(crate) struct Limit(pub i64);

impl Limit {
    pub(crate) const MIN: i64 = 1;
    pub(crate) const MAX: i64 = 1000;
    pub(crate) const DEFAULT: i64 = 100;
}

impl Default for Limit {
    fn default() -> Self {
        Limit(Self::DEFAULT)
    }
}

impl TryFrom<i64> for Limit {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        if (Self::MIN..=Self::MAX).contains(&v) {
            Ok(Limit(v))
        } else {
            Err(format!("limit must be {} to {}", Self::MIN, Self::MAX))
        }
    }
}
