//! Admin access: `Authorization: Bearer <admin token>`, or the session cookie set by
//! `POST /admin/login` (an expiring HMAC of the admin token's hash, never the token itself).
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use hashtale_core::sign::hmac_sha256_parts;
use hashtale_types::now_ms;
use subtle::ConstantTimeEq;

use super::secret;
use super::views::{PageError, PageResult};
use crate::auth::{check_bearer, Presented, TokenHash};
use crate::AppState;

/// Name of the admin session cookie.
pub const ADMIN_COOKIE: &str = "hashtale_admin";
/// How long an admin session cookie is valid.
const ADMIN_SESSION: Duration = Duration::from_secs(12 * 3600);

pub(super) fn admin_hash(state: &AppState) -> PageResult<TokenHash> {
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
pub(super) async fn require_admin(state: &AppState, headers: &HeaderMap) -> PageResult<()> {
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

/// The session cookie of a new admin session (set by a successful sign-in).
pub(super) async fn session_cookie(
    state: &AppState,
    admin: &TokenHash,
) -> PageResult<Cookie<'static>> {
    let expiry = now_ms() + ADMIN_SESSION.as_millis() as i64;
    let value = admin_session_value(secret(state).await?, admin, expiry);
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
    Ok(cookie.build())
}
