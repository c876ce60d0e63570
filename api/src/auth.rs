//! The one token check of the API: `POST /v1/posts` ([`RequireToken`]) and the admin pages
//! (`ratings::session::require_admin`, the sign-in form) all compare through [`TokenHash`].
//!
//! Configured tokens are kept only as their SHA-256; a presented token is hashed and the two
//! digests compared in constant time, so timing says nothing about how much of a guess matched.
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum_extra::headers::authorization::Bearer;
use axum_extra::headers::{Authorization, HeaderMapExt};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{ApiError, AppState};

/// The SHA-256 of a configured token.
#[derive(Clone, Copy)]
pub(crate) struct TokenHash([u8; 32]);

impl TokenHash {
    pub(crate) fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `given` is the token, compared in constant time.
    pub(crate) fn matches(&self, given: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        bool::from(given.ct_eq(&self.0))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// What a request's `Authorization` header says about a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presented {
    /// No `Authorization` header.
    Nothing,
    /// `Bearer <the token>`.
    Valid,
    /// Another scheme, an empty or a wrong token.
    Invalid,
}

/// Checks the request's `Authorization: Bearer …` against `expected`.
pub(crate) fn check_bearer(expected: &TokenHash, headers: &HeaderMap) -> Presented {
    if !headers.contains_key(header::AUTHORIZATION) {
        return Presented::Nothing;
    }
    match headers.typed_get::<Authorization<Bearer>>() {
        Some(auth) if expected.matches(auth.token()) => Presented::Valid,
        _ => Presented::Invalid,
    }
}

/// Extractor for the write routes: `Authorization: Bearer <api.token>`, or 401 (403 when no
/// token is configured: writes are then disabled).
pub(crate) struct RequireToken;

impl FromRequestParts<AppState> for RequireToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = &state.token_hash else {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "writes are disabled: no api.token is configured".into(),
            ));
        };
        match check_bearer(expected, &parts.headers) {
            Presented::Valid => Ok(RequireToken),
            Presented::Nothing | Presented::Invalid => Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API token".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn bearer_tokens_are_told_apart() {
        let t = TokenHash::of("s3cret");
        assert_eq!(check_bearer(&t, &headers(None)), Presented::Nothing);
        assert_eq!(
            check_bearer(&t, &headers(Some("Bearer s3cret"))),
            Presented::Valid
        );
        for wrong in [
            "Bearer s3cre",
            "Bearer ",
            "Basic czNjcmV0",
            "s3cret",
            "Bearer s3cret2",
        ] {
            assert_eq!(
                check_bearer(&t, &headers(Some(wrong))),
                Presented::Invalid,
                "{wrong}"
            );
        }
        assert!(t.matches("s3cret") && !t.matches(""));
    }
}
