//! The HTTP API against a real store: token on writes, content checks, job/post/result reads,
//! health, metrics and the OpenAPI document.
mod pipeline_support;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use base64::Engine;
use hashtale_store::NewResult;
use hashtale_types::JobState;
use hashtale_types::Timings;
use pipeline_support::{png, Env};
use tower::ServiceExt;

const TOKEN: &str = "s3cret-token";

async fn app(env: &Env) -> axum::Router {
    let mut cfg = env.cfg.clone();
    cfg.api.token = TOKEN.into();
    let state = hashtale_api::AppState::new(env.store.clone(), env.queue.clone(), &cfg).unwrap();
    hashtale_api::router(state, 1 << 20)
}

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, serde_json::Value, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        text,
    )
}

fn post_json(body: serde_json::Value, token: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/v1/posts").header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::from(body.to_string())).unwrap()
}

async fn api_suite(env: Env) {
    let app = app(&env).await;
    let b64 = base64::engine::general_purpose::STANDARD.encode(png(1));
    let body = serde_json::json!({ "source": "web", "external_id": "e1", "image_base64": b64, "caption": "hi" });

    // Writes need the token.
    assert_eq!(
        call(&app, post_json(body.clone(), None)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, post_json(body.clone(), Some("wrong"))).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (st, v, _) = call(&app, post_json(body.clone(), Some(TOKEN))).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["queued"], true, "{v}");
    let (post_id, job_id) = (
        v["post_id"].as_i64().unwrap(),
        v["job_id"].as_i64().unwrap(),
    );
    // The same post again: known, same job, nothing new.
    let (st, v, _) = call(&app, post_json(body.clone(), Some(TOKEN))).await;
    assert_eq!(
        (st, v["job_id"].as_i64(), v["new"].as_bool()),
        (StatusCode::OK, Some(job_id), Some(false))
    );

    // Content checks: not an image by magic bytes; private/loopback and non-http URLs.
    let text = base64::engine::general_purpose::STANDARD.encode(b"<html>not an image</html>");
    let (st, _, _) = call(
        &app,
        post_json(serde_json::json!({ "image_base64": text }), Some(TOKEN)),
    )
    .await;
    assert_eq!(st, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let mut strict = env.cfg.clone();
    strict.fetch.allow_private = false;
    strict.api.token = TOKEN.into();
    let strict_app = hashtale_api::router(
        hashtale_api::AppState::new(env.store.clone(), env.queue.clone(), &strict).unwrap(),
        1 << 20,
    );
    for url in [
        "http://127.0.0.1/x.png",
        "http://169.254.169.254/latest",
        "file:///etc/passwd",
    ] {
        let (st, v, _) = call(
            &strict_app,
            post_json(serde_json::json!({ "image_url": url }), Some(TOKEN)),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{url}: {v}");
    }
    let (st, _, _) = call(
        &app,
        post_json(serde_json::json!({ "caption": "no image" }), Some(TOKEN)),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // `http:///x.png` names no host (the URL parser would read the path as one).
    let (st, v, _) = call(
        &app,
        post_json(
            serde_json::json!({ "image_url": "http:///x.png" }),
            Some(TOKEN),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    // Captions are capped at Instagram's 2,200 characters.
    let long = "é".repeat(hashtale_types::MAX_CAPTION_CHARS + 1);
    let (st, v, _) = call(
        &app,
        post_json(
            serde_json::json!({ "image_url": "https://example.com/x.png", "caption": long }),
            Some(TOKEN),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("caption"), "{v}");
    // Too large for the body limit.
    let huge = "A".repeat(3 << 20);
    let (st, _, _) = call(
        &app,
        post_json(serde_json::json!({ "image_base64": huge }), Some(TOKEN)),
    )
    .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);

    // Multipart upload.
    let (st, v, _) = call(&app, multipart_post(&[("caption", "up")], "a.png", &png(2))).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    // An HTML form with both inputs sends an empty `image_url` beside the file: it is absent.
    let (st, v, _) = call(&app, multipart_post(&[("image_url", "")], "b.png", &png(3))).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");

    // Parameters out of their documented bounds, malformed or repeated: a JSON 400.
    for uri in [
        "/v1/results?limit=-1722",
        "/v1/results?limit=0",
        "/v1/results?limit=1001",
        "/v1/results?since=-1",
        "/v1/results?after=x",
        "/v1/results?since=1&since=2",
        "/v1/results?limit=10&limit=10",
        "/v1/jobs/0",
        "/v1/jobs/-3",
        "/v1/jobs/9223372036854775808",
        "/v1/posts/0",
        "/v1/posts/abc",
        "/v1/posts/99999999999999999999",
    ] {
        let (st, v, text) = call(&app, Request::get(uri).body(Body::empty()).unwrap()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}: {text}");
        assert!(v["error"].is_string(), "{uri}: {text}");
    }
    let (st, _, text) = call(
        &app,
        Request::get("/v1/jobs/9223372036854775807")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "the largest id is an id: {text}");

    // Reads.
    let (st, v, _) = call(
        &app,
        Request::get(format!("/v1/jobs/{job_id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["post_id"].as_i64(), Some(post_id));
    assert_eq!(
        call(
            &app,
            Request::get("/v1/jobs/999999").body(Body::empty()).unwrap()
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    env.store.start_jobs(&[job_id]).await.unwrap();
    env.store
        .complete(
            "test-v",
            &[NewResult {
                job_id,
                post_id,
                output: hashtale_types::ImageResult {
                    hashtags: vec![hashtale_types::ScoredTag {
                        tag: "sunset".into(),
                        score: 0.9,
                        attention: vec![0.0],
                    }],
                    story: Some("s".into()),
                    ..Default::default()
                },
                story: Some("s".into()),
                timings: Timings::default(),
            }],
        )
        .await
        .unwrap();
    let (st, v, _) = call(
        &app,
        Request::get(format!("/v1/posts/{post_id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["post"]["caption"], "hi");
    assert_eq!(v["job"]["state"], JobState::Done.as_str());
    assert_eq!(v["results"][0]["output"]["hashtags"][0]["tag"], "sunset");
    let (_, v, _) = call(
        &app,
        Request::get("/v1/results?since=0&limit=10")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(v["results"].as_array().unwrap().len(), 1);
    assert!(v["next_after"].is_null());

    // Health, readiness, metrics, OpenAPI.
    assert_eq!(
        call(&app, Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .0,
        StatusCode::OK
    );
    let (st, v, _) = call(&app, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!((st, v["database"].as_str()), (StatusCode::OK, Some("ok")));
    let (st, _, text) = call(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::OK);
    assert!(text.contains("hashtale_jobs{state=\"done\"} 1"), "{text}");
    assert!(text.contains("hashtale_queue_depth"), "{text}");
    let (st, v, _) = call(
        &app,
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["openapi"], "3.1.0");
    assert!(v["paths"]["/v1/posts"]["post"]["security"].is_array());
    for path in [
        "/v1/results",
        "/rate/{token}/answer",
        "/admin/ratings/report.json",
        "/healthz",
    ] {
        assert!(v["paths"][path].is_object(), "{path} is not documented");
    }

    // Not ready: the database is gone. Readers learn that, not the driver's error text.
    let gone = hashtale_store::Store::connect(
        &format!("sqlite://{}", env.dir.path().join("gone.db").display()),
        &hashtale_store::StoreOptions {
            max_connections: 1,
            pg_schema: None,
        },
    )
    .await
    .unwrap();
    gone.close().await;
    let down = hashtale_api::router(
        hashtale_api::AppState::new(gone, env.queue.clone(), &env.cfg).unwrap(),
        1 << 20,
    );
    let (st, v, text) = call(&down, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["database"], "unreachable", "{text}");
    env.cleanup().await;
}

#[tokio::test]
async fn api_on_sqlite_embedded() {
    api_suite(Env::sqlite_local("api").await).await;
}

#[tokio::test]
async fn api_on_postgres_rabbitmq() {
    api_suite(Env::postgres_rabbit("api").await).await;
}

#[tokio::test]
async fn writes_are_refused_without_a_configured_token() {
    let env = Env::sqlite_local("notoken").await;
    let state =
        hashtale_api::AppState::new(env.store.clone(), env.queue.clone(), &env.cfg).unwrap();
    let app = hashtale_api::router(state, 1 << 20);
    let (st, _, _) = call(
        &app,
        post_json(
            serde_json::json!({ "image_url": "http://example.com/a.png" }),
            Some(""),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    env.cleanup().await;
}

/// Issue 13: with the broker away, a post is committed and answered 202 with `queued: false`
/// (never a 500 after the commit), `/readyz` says not ready, a client's retry is answered 200;
/// once the broker is back, the retry hands the pending job over and `/readyz` is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_are_accepted_while_the_broker_is_away() {
    use pipeline_support::{amqp_url, host_port, pg_url, wait_until, Proxy};
    let proxy = Proxy::start(host_port(&amqp_url())).await;
    let env = Env::postgres_rabbit_at("api_outage", &pg_url(), &proxy.url_for(&amqp_url())).await;
    let rabbit = env.queue.rabbit().unwrap().clone();
    let app = app(&env).await;
    let b64 = |seed| base64::engine::general_purpose::STANDARD.encode(png(seed));
    let (st, v, _) = call(
        &app,
        post_json(serde_json::json!({ "image_base64": b64(1) }), Some(TOKEN)),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["queued"], true, "{v}");

    proxy.cut();
    wait_until(10, "readyz to report the broker away", || async {
        let (st, v, _) = call(&app, Request::get("/readyz").body(Body::empty()).unwrap()).await;
        st == StatusCode::SERVICE_UNAVAILABLE && v["broker"] == "unreachable"
    })
    .await;
    let body = serde_json::json!({ "image_base64": b64(2) });
    let (st, v, _) = call(&app, post_json(body.clone(), Some(TOKEN))).await;
    assert_eq!(st, StatusCode::ACCEPTED, "committed, so never a 500: {v}");
    assert_eq!(
        (v["new"].as_bool(), v["queued"].as_bool()),
        (Some(true), Some(false)),
        "{v}"
    );
    let job_id = v["job_id"].as_i64().unwrap();
    assert_eq!(
        env.store.job(job_id).await.unwrap().unwrap().state,
        JobState::Pending
    );
    // The client retries while the broker is still away: known post, still not queued.
    let (st, v, _) = call(&app, post_json(body.clone(), Some(TOKEN))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (v["job_id"].as_i64(), v["queued"].as_bool()),
        (Some(job_id), Some(false))
    );

    proxy.restore();
    wait_until(20, "readyz to be ready again", || async {
        call(&app, Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .0
            == StatusCode::OK
    })
    .await;
    // A retry now hands the pending job over.
    let (st, v, _) = call(&app, post_json(body, Some(TOKEN))).await;
    assert_eq!(
        (st, v["queued"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{v}"
    );
    assert_eq!(
        env.store.job(job_id).await.unwrap().unwrap().state,
        JobState::Queued
    );
    assert_eq!(rabbit.depth(&rabbit.names.jobs).await.unwrap(), 2);
    env.cleanup().await;
}

/// A multipart `POST /v1/posts` with the token: text fields, then a PNG file field.
fn multipart_post(fields: &[(&str, &str)], file_name: &str, png: &[u8]) -> Request<Body> {
    let boundary = "XyZ";
    let mut mp = Vec::new();
    for (name, value) in fields {
        mp.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    mp.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: image/png\r\n\r\n"
        )
        .as_bytes(),
    );
    mp.extend_from_slice(png);
    mp.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Request::post("/v1/posts")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from(mp))
        .unwrap()
}
