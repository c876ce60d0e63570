//! CSRF tokens of the rater forms: an HMAC of the rater and the assignment, so that a token is
//! valid only for that rater's form for that item.
use axum::http::StatusCode;
use hashtale_core::sign::{hmac_sha256_parts, verify_parts};

use super::views::{PageError, PageResult};

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

pub(super) fn check_csrf(
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
