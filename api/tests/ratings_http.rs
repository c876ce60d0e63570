//! The rating and admin routes against real Postgres and SQLite: the page flow, authorization of
//! every route, CSRF, answers validated against the scales, items not assigned to the rater, the
//! admin session, the report, chart and exports (round-tripped through the readers).
mod ratings_support;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use hashtale_store::ratings::assignment_state;
use ratings_support::{default_output, insert_result, output, Env};
use tower::ServiceExt;

const ADMIN: &str = "admin-secret-token";

async fn app(env: &Env, admin: bool) -> axum::Router {
    let mut cfg = env.cfg.clone();
    if admin {
        cfg.ratings.admin_token = ADMIN.into();
    }
    cfg.ratings.k = 2;
    let state = hashtale_api::AppState::new(env.store.clone(), env.queue().await, &cfg).unwrap();
    hashtale_api::router(state, 1 << 20)
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(app: &axum::Router, req: Request<Body>) -> Resp {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .unwrap()
        .to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

async fn get(app: &axum::Router, uri: &str) -> Resp {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn get_with(app: &axum::Router, uri: &str, name: header::HeaderName, value: &str) -> Resp {
    send(
        app,
        Request::get(uri)
            .header(name, value)
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

async fn post_form(app: &axum::Router, uri: &str, fields: &[(&str, &str)]) -> Resp {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    send(
        app,
        Request::post(uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap(),
    )
    .await
}

/// The value of the hidden input `name` in a page.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        + marker.len();
    page[start..start + page[start..].find('"').unwrap()].to_string()
}

async fn http_suite(env: Env) {
    let store = env.store.clone();
    let r1 = insert_result(&store, 1, "v1", default_output(1)).await;
    let r2 = insert_result(&store, 2, "v2", default_output(2)).await;
    // A result without a story: only Q1 is asked.
    let r3 = insert_result(
        &store,
        3,
        "v1",
        output(&[("tree", 0.4), ("leaf", 0.2)], None),
    )
    .await;
    let app = app(&env, true).await;
    let (ann, ann_token) = hashtale_api::ratings::add_rater(&store, "ann")
        .await
        .unwrap();
    let (_bob, bob_token) = hashtale_api::ratings::add_rater(&store, "bob")
        .await
        .unwrap();
    // Only the hash is stored.
    assert!(store
        .rater_by_token_sha256(&ann_token)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .rater_by_token_sha256(&hashtale_api::ratings::token_sha256(&ann_token))
            .await
            .unwrap()
            .unwrap()
            .id,
        ann.id
    );

    // Ann's first item.
    let page = get(&app, &format!("/rate/{ann_token}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(page.headers[header::REFERRER_POLICY], "no-referrer");
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
    let html = page.text();
    assert!(
        html.contains("Is this hashtag relevant to the image?"),
        "{html}"
    );
    assert!(
        html.contains("#beach") && html.contains("clear context"),
        "{html}"
    );
    assert!(html.contains("<script src=\"/static/rate.js\">"));
    assert!(!html.contains("<script>"), "no inline script");
    let a1: i64 = hidden(&html, "assignment").parse().unwrap();
    let csrf1 = hidden(&html, "csrf");
    let item1 = store.rating_assignment(a1).await.unwrap().unwrap();
    assert_eq!(item1.result_id, r1);
    let (a1s, ann_base) = (a1.to_string(), format!("/rate/{ann_token}"));
    let answer_uri = format!("{ann_base}/answer");

    // The image of an assigned result, and not of others.
    let img = get(&app, &format!("{ann_base}/image/{r1}")).await;
    assert_eq!(img.status, StatusCode::OK);
    assert_eq!(img.headers[header::CONTENT_TYPE], "image/png");
    assert_eq!(img.body, ratings_support::png(1));
    assert_eq!(
        get(&app, &format!("{ann_base}/image/{r2}")).await.status,
        StatusCode::NOT_FOUND
    );

    // CSRF: missing or wrong → 403; nothing stored.
    let valid = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, String)> {
        let mut v: Vec<(&str, String)> =
            vec![("q1_0", "1".into()), ("q2", "2".into()), ("q3", "1".into())];
        for &(k, val) in extra {
            v.retain(|(kk, _)| *kk != k);
            v.push((k, val.to_string()));
        }
        v
    };
    let with = |fields: Vec<(&'static str, String)>, assignment: &str, csrf: Option<&str>| {
        let mut f: Vec<(&str, String)> = vec![("assignment", assignment.to_string())];
        if let Some(c) = csrf {
            f.push(("csrf", c.to_string()));
        }
        f.extend(fields);
        f
    };
    let post = |fields: Vec<(&'static str, String)>| {
        let app = app.clone();
        let uri = answer_uri.clone();
        async move {
            let f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_form(&app, &uri, &f).await
        }
    };
    let r = post(with(valid(&[]), &a1s, None)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(r.text().contains("CSRF"));
    let wrong = "00".repeat(32);
    assert_eq!(
        post(with(valid(&[]), &a1s, Some(&wrong))).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(with(valid(&[]), &a1s, Some("not-hex"))).await.status,
        StatusCode::FORBIDDEN
    );

    // Bad values → 400 with a message naming the problem.
    for (fields, needle) in [
        (valid(&[("q2", "7")]), "q2"),
        (valid(&[("q3", "-1")]), "q3"),
        (valid(&[("q2", "abc")]), "not a number"),
        (valid(&[("q1_0", "5")]), "q1_0"),
        (valid(&[("q1_9", "1")]), "3 hashtags"),
        (valid(&[("color", "red")]), "unknown field color"),
        (
            vec![("q1_0", "1".to_string()), ("q3", "1".to_string())],
            "q2: an answer is required",
        ),
    ] {
        let r = post(with(fields.clone(), &a1s, Some(&csrf1))).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{fields:?}: {}",
            r.text()
        );
        assert!(r.text().contains(needle), "{fields:?}: {}", r.text());
    }
    let r = post(vec![("csrf", csrf1.clone()), ("q2", "1".into())]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "no assignment");
    assert!(
        store.rating_rows(None).await.unwrap().is_empty(),
        "nothing stored so far"
    );

    // A valid answer: 303 back to the page; one row per hashtag + Q2 + Q3.
    let r = post(with(valid(&[]), &a1s, Some(&csrf1))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.headers[header::LOCATION], ann_base.as_str());
    let rows = store.rating_rows(None).await.unwrap();
    let got: Vec<(String, i32, Option<String>, i32)> = rows
        .iter()
        .map(|r| (r.question.clone(), r.item, r.hashtag.clone(), r.value))
        .collect();
    assert_eq!(
        got,
        vec![
            ("q1".into(), 0, Some("beach".into()), 1),
            ("q1".into(), 1, Some("sea".into()), 0),
            ("q1".into(), 2, Some("sunset".into()), 0),
            ("q2".into(), 0, None, 2),
            ("q3".into(), 0, None, 1),
        ]
    );
    assert!(rows
        .iter()
        .all(|r| r.rater_name == "ann" && r.model_version == "v1" && r.result_id == r1));

    // Ann's next item; Bob cannot answer it, nor see its image, even with Ann's CSRF token.
    let html = get(&app, &ann_base).await.text();
    let a2: i64 = hidden(&html, "assignment").parse().unwrap();
    let csrf2 = hidden(&html, "csrf");
    let r2_item = store.rating_assignment(a2).await.unwrap().unwrap();
    assert_ne!(r2_item.result_id, r1);
    assert!(html.contains("Change my previous answers"));
    let bob_base = format!("/rate/{bob_token}");
    let r = post_form(
        &app,
        &format!("{bob_base}/answer"),
        &[
            ("assignment", &a2.to_string()),
            ("csrf", &csrf2),
            ("q1_0", "1"),
            ("q2", "1"),
            ("q3", "1"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    let r = post_form(
        &app,
        &format!("{bob_base}/skip"),
        &[("assignment", &a2.to_string()), ("csrf", &csrf2)],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&app, &format!("{bob_base}/image/{}", r2_item.result_id))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Ann's CSRF token for item 2 does not work for item 1 (bound to the assignment).
    let r = post(with(valid(&[]), &a1s, Some(&csrf2))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Ann skips item 2 (CSRF checked there too) and goes on.
    let r = post_form(
        &app,
        &format!("{ann_base}/skip"),
        &[("assignment", &a2.to_string())],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = post_form(
        &app,
        &format!("{ann_base}/skip"),
        &[("assignment", &a2.to_string()), ("csrf", &csrf2)],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(
        store.rating_assignment(a2).await.unwrap().unwrap().state,
        assignment_state::SKIPPED
    );

    // The previous item can be changed (prefilled), the skipped one cannot be answered.
    let prev = get(&app, &format!("{ann_base}/previous")).await;
    assert_eq!(prev.status, StatusCode::OK);
    let ph = prev.text();
    assert_eq!(hidden(&ph, "assignment"), a1s);
    assert!(ph.contains("Save changes"));
    assert!(
        ph.contains("name=\"q2\" value=\"2\" required checked"),
        "Q2 prefilled: {ph}"
    );
    let pcsrf = hidden(&ph, "csrf");
    let r = post(with(valid(&[("q2", "0")]), &a1s, Some(&pcsrf))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let q2: Vec<i32> = store
        .rating_rows(None)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.question == "q2")
        .map(|r| r.value)
        .collect();
    assert_eq!(q2, vec![0], "the fix replaced the answer");
    let r = post_form(
        &app,
        &answer_uri,
        &[
            ("assignment", &a2.to_string()),
            ("csrf", &csrf2),
            ("q1_0", "1"),
            ("q2", "1"),
            ("q3", "1"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());

    // The story-less result: only hashtags; Q2 sent anyway → 400.
    let html = get(&app, &ann_base).await.text();
    let a3: i64 = hidden(&html, "assignment").parse().unwrap();
    assert_eq!(
        store
            .rating_assignment(a3)
            .await
            .unwrap()
            .unwrap()
            .result_id,
        r3
    );
    assert!(!html.contains("name=\"q2\""));
    let csrf3 = hidden(&html, "csrf");
    let r = post_form(
        &app,
        &answer_uri,
        &[
            ("assignment", &a3.to_string()),
            ("csrf", &csrf3),
            ("q2", "1"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("no story"));
    let r = post_form(
        &app,
        &answer_uri,
        &[
            ("assignment", &a3.to_string()),
            ("csrf", &csrf3),
            ("q1_1", "1"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    // Nothing left for Ann.
    let done = get(&app, &ann_base).await;
    assert_eq!(done.status, StatusCode::OK);
    assert!(done.text().contains("All done"));

    // Bob rates result 1 too, so the report has two raters on it.
    let html = get(&app, &bob_base).await.text();
    let b1 = hidden(&html, "assignment");
    let bcsrf = hidden(&html, "csrf");
    let r = post_form(
        &app,
        &format!("{bob_base}/answer"),
        &[
            ("assignment", &b1),
            ("csrf", &bcsrf),
            ("q1_0", "1"),
            ("q1_1", "1"),
            ("q2", "2"),
            ("q3", "2"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());

    admin_routes(&app, &store).await;

    // A revoked rater's link stops working at once.
    store.revoke_rater("bob").await.unwrap().unwrap();
    assert_eq!(get(&app, &bob_base).await.status, StatusCode::UNAUTHORIZED);
    env.cleanup().await;
}

async fn admin_routes(app: &axum::Router, store: &hashtale_store::Store) {
    let bearer = format!("Bearer {ADMIN}");
    // Bearer token.
    let page = get_with(app, "/admin/ratings", header::AUTHORIZATION, &bearer).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let html = page.text();
    assert!(html.contains("Human ratings by model version"), "{html}");
    assert!(html.contains("/admin/ratings/chart.svg"));
    assert!(html.contains("ann") && html.contains("bob"));
    let svg = get_with(
        app,
        "/admin/ratings/chart.svg",
        header::AUTHORIZATION,
        &bearer,
    )
    .await;
    assert_eq!(svg.status, StatusCode::OK);
    assert!(svg.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("image/svg+xml"));
    assert!(svg.text().contains("<svg"));
    let json = get_with(
        app,
        "/admin/ratings/report.json",
        header::AUTHORIZATION,
        &bearer,
    )
    .await;
    let report: hashtale_ratings::Report = serde_json::from_slice(&json.body).unwrap();
    // Only v1 has answers (Ann skipped the v2 result).
    assert_eq!(report.versions.len(), 1);
    assert_eq!(report.versions[0].model_version, "v1");

    // Exports round-trip to exactly the stored rows; the version filter applies.
    let rows = store.rating_rows(None).await.unwrap();
    let csv = get_with(
        app,
        "/admin/ratings/export.csv",
        header::AUTHORIZATION,
        &bearer,
    )
    .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.headers[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .contains("ratings.csv"));
    assert_eq!(
        hashtale_ratings::read_csv(csv.body.as_slice()).unwrap(),
        rows
    );
    let jsonl = get_with(
        app,
        "/admin/ratings/export.jsonl",
        header::AUTHORIZATION,
        &bearer,
    )
    .await;
    assert_eq!(
        hashtale_ratings::read_jsonl(jsonl.body.as_slice()).unwrap(),
        rows
    );
    let v1 = get_with(
        app,
        "/admin/ratings/export.jsonl?model_version=v1",
        header::AUTHORIZATION,
        &bearer,
    )
    .await;
    let v1_rows = hashtale_ratings::read_jsonl(v1.body.as_slice()).unwrap();
    assert!(!v1_rows.is_empty() && v1_rows.iter().all(|r| r.model_version == "v1"));

    // Sign-in form → session cookie → pages without the header.
    assert_eq!(get(app, "/admin/login").await.status, StatusCode::OK);
    let bad = post_form(app, "/admin/login", &[("token", "nope")]).await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(!bad.headers.contains_key(header::SET_COOKIE));
    let ok = post_form(app, "/admin/login", &[("token", ADMIN)]).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    let set = ok.headers[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/admin"),
        "{set}"
    );
    assert!(!set.contains(ADMIN), "the cookie is not the token");
    let cookie = set.split(';').next().unwrap().to_string();
    let page = get_with(app, "/admin/ratings", header::COOKIE, &cookie).await;
    assert_eq!(page.status, StatusCode::OK);
    // A forged or altered cookie is refused.
    let (name, value) = cookie.split_once('=').unwrap();
    let (exp, tag) = value.split_once('.').unwrap();
    let later = format!("{name}={}.{tag}", exp.parse::<i64>().unwrap() + 1);
    assert_eq!(
        get_with(app, "/admin/ratings", header::COOKIE, &later)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let expired = format!("{name}=1000.{tag}");
    assert_eq!(
        get_with(app, "/admin/ratings", header::COOKIE, &expired)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

/// Every rating and admin route without a token, with a wrong one, and with admin disabled.
async fn authorization_suite(env: Env) {
    let store = env.store.clone();
    let result = insert_result(&store, 1, "v1", default_output(1)).await;
    let (_, token) = hashtale_api::ratings::add_rater(&store, "ann")
        .await
        .unwrap();
    let app = app(&env, true).await;
    let html = get(&app, &format!("/rate/{token}")).await.text();
    let assignment = hidden(&html, "assignment");
    let csrf = hidden(&html, "csrf");
    let wrong_tokens = [
        "A".repeat(43),                            // well-formed, unknown
        "short".to_string(),                       // malformed
        format!("{}x", &token[..token.len() - 1]), // one character off
    ];
    let rater_routes = |t: &str| -> Vec<(Method, String)> {
        vec![
            (Method::GET, format!("/rate/{t}")),
            (Method::GET, format!("/rate/{t}/previous")),
            (Method::GET, format!("/rate/{t}/image/{result}")),
            (Method::POST, format!("/rate/{t}/answer")),
            (Method::POST, format!("/rate/{t}/skip")),
        ]
    };
    for t in &wrong_tokens {
        for (method, uri) in rater_routes(t) {
            let req = Request::builder()
                .method(method.clone())
                .uri(&uri)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!(
                    "assignment={assignment}&csrf={csrf}&q1_0=1&q2=1&q3=1"
                )))
                .unwrap();
            let r = send(&app, req).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri}: {}",
                r.text()
            );
        }
    }
    // Nothing was stored by those attempts.
    assert!(store.rating_rows(None).await.unwrap().is_empty());
    let admin_routes = [
        "/admin/ratings",
        "/admin/ratings?model_version=v1",
        "/admin/ratings/report.json",
        "/admin/ratings/chart.svg",
        "/admin/ratings/export.csv",
        "/admin/ratings/export.jsonl",
    ];
    for uri in admin_routes {
        assert_eq!(
            get(&app, uri).await.status,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
        for wrong in [
            "Bearer wrong",
            "Bearer ",
            "Basic YWRtaW46YWRtaW4=",
            &format!("Bearer {token}"),
        ] {
            let r = get_with(&app, uri, header::AUTHORIZATION, wrong).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{uri} with {wrong}");
        }
        let r = get_with(&app, uri, header::COOKIE, "hashtale_admin=123.abc").await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{uri} with a forged cookie"
        );
        let r = get_with(&app, uri, header::AUTHORIZATION, &format!("Bearer {ADMIN}")).await;
        assert_eq!(r.status, StatusCode::OK, "{uri} with the admin token");
    }
    // The rater token is not an admin token, and the admin token is not a rater token.
    assert_eq!(
        get(&app, &format!("/rate/{ADMIN}")).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Admin disabled (no admin or API token): 403 everywhere, sign-in included.
    let closed = self::app(&env, false).await;
    for uri in admin_routes.iter().chain(&["/admin/login"]) {
        let r = get_with(
            &closed,
            uri,
            header::AUTHORIZATION,
            &format!("Bearer {ADMIN}"),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri}");
    }
    assert_eq!(
        post_form(&closed, "/admin/login", &[("token", "")])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // The static files are public, with the same headers.
    let js = get(&app, "/static/rate.js").await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(js.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert_eq!(js.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    env.cleanup().await;
}

/// An image stored as a URL is fetched by the server (safe fetcher) and served from its origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_from_url() {
    let png = ratings_support::png(9);
    let served = png.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let files = axum::Router::new().route(
        "/img.png",
        axum::routing::get(move || {
            let body = served.clone();
            async move { ([(header::CONTENT_TYPE, "image/png")], body) }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, files).await;
    });
    let env = Env::sqlite("url").await;
    let result = ratings_support::insert_result_with(
        &env.store,
        9,
        "v1",
        default_output(9),
        hashtale_types::ImageSource::Url(format!("http://{addr}/img.png")),
    )
    .await;
    let (_, token) = hashtale_api::ratings::add_rater(&env.store, "ann")
        .await
        .unwrap();
    let mut cfg = env.cfg.clone();
    cfg.fetch.allow_private = true;
    let state = hashtale_api::AppState::new(env.store.clone(), env.queue().await, &cfg).unwrap();
    let app = hashtale_api::router(state, 1 << 20);
    let image_uri = format!("/rate/{token}/image/{result}");
    // Not assigned yet: refused.
    assert_eq!(get(&app, &image_uri).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&app, &format!("/rate/{token}")).await.status,
        StatusCode::OK
    );
    let img = get(&app, &image_uri).await;
    assert_eq!(img.status, StatusCode::OK, "{}", img.text());
    assert_eq!(img.body, png);
    assert_eq!(img.headers[header::CONTENT_TYPE], "image/png");
    // The default fetch rules refuse loopback addresses: 502 with the reason, not the image.
    let strict =
        hashtale_api::AppState::new(env.store.clone(), env.queue().await, &env.cfg).unwrap();
    let r = get(&hashtale_api::router(strict, 1 << 20), &image_uri).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sqlite() {
    http_suite(Env::sqlite("http").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_postgres() {
    http_suite(Env::postgres("http").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_sqlite() {
    authorization_suite(Env::sqlite("authz").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_postgres() {
    authorization_suite(Env::postgres("authz").await).await;
}
