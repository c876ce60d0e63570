//! The result outbox: a result committed but never announced (its worker died between the
//! commit and the publish) is published by the sweep; webhook calls stay owed until the
//! endpoint accepts them. No models needed: results are committed directly.
mod pipeline_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hashtale_scheduler::Ingestor;
use hashtale_store::{Committed, NewResult, Outbox, Owed};
use hashtale_types::{ImageSource, NewPost, ResultMessage, Timings};
use hashtale_worker::{sweep_outbox, Webhook};
use pipeline_support::{png, Env};

/// Stores `n` posts and commits a result for each, owing `owed`.
async fn committed_results(env: &Env, n: u32, owed: Owed) -> Vec<Committed> {
    let ing = Ingestor::new(env.store.clone(), env.queue.clone(), &env.cfg.fetch).unwrap();
    let mut results = Vec::new();
    for i in 0..n {
        let r = ing
            .ingest(&NewPost {
                source: "outbox".into(),
                source_kind: "test".into(),
                external_id: format!("o{i}-{owed:?}"),
                image: ImageSource::Bytes(png(i)),
                caption: None,
            })
            .await
            .unwrap();
        let job_id = r.job_id.unwrap();
        env.store.start_jobs(&[job_id]).await.unwrap();
        results.push(NewResult {
            job_id,
            post_id: r.post_id,
            output: serde_json::from_value(serde_json::json!({ "hashtags": [{ "tag": format!("t{i}"), "score": 0.5, "attention": [] }] })).unwrap(),
            story: None,
            timings: Timings::default(),
        });
    }
    env.store
        .complete_with("outbox-v1", &results, owed)
        .await
        .unwrap()
}

async fn owed(env: &Env, what: Outbox) -> Vec<i64> {
    env.store
        .owed_results(what, 0, i64::MAX, 1000)
        .await
        .unwrap()
        .iter()
        .map(|m| m.result_id)
        .collect()
}

#[tokio::test]
async fn a_result_left_unpublished_is_published_by_the_sweep() {
    let env = Env::postgres_rabbit("outbox").await;
    let rabbit = env.queue.rabbit().unwrap().clone();
    // A result whose worker died after the commit: owed, never published.
    let lost = committed_results(
        &env,
        1,
        Owed {
            publish: true,
            webhook: false,
        },
    )
    .await;
    assert_eq!(lost.len(), 1);
    // One that was published already owes nothing.
    let fine = committed_results(&env, 1, Owed::NOTHING).await;
    assert_eq!(owed(&env, Outbox::Publish).await, vec![lost[0].result_id]);

    // A test queue bound to the results exchange.
    let mut sub = rabbit.subscribe_results().await.unwrap();
    // Too young: left to the worker that committed it.
    let swept = sweep_outbox(&env.store, &env.queue, &None, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(swept.published, 0);
    let swept = sweep_outbox(&env.store, &env.queue, &None, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(swept.published, 1);
    let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("the swept result message")
        .unwrap()
        .unwrap();
    let m: ResultMessage = serde_json::from_slice(&d.data).unwrap();
    assert_eq!(m.result_id, lost[0].result_id);
    assert_eq!(m.post_id, lost[0].post_id);
    assert_eq!(m.job_id, lost[0].job_id);
    assert_eq!(m.model_version, "outbox-v1");
    assert_eq!(m.source, "outbox");
    assert!(m.external_id.starts_with("o0-"), "{}", m.external_id);
    assert_eq!(m.output.hashtags[0].tag, "t0");
    assert_ne!(m.result_id, fine[0].result_id);
    // Marked published: the next sweep sends nothing.
    assert!(owed(&env, Outbox::Publish).await.is_empty());
    let swept = sweep_outbox(&env.store, &env.queue, &None, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(swept.published, 0);
    let more = tokio::time::timeout(Duration::from_millis(500), sub.next()).await;
    assert!(more.is_err(), "nothing else may be published");
    env.cleanup().await;
}

/// Webhook calls accepted: signature header and body.
type Calls = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook endpoint that refuses its first `fail_first` calls with 503.
async fn hook_server(fail_first: usize) -> (String, Calls) {
    let calls: Calls = Default::default();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c2 = calls.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (c2, seen) = (c2.clone(), seen.clone());
                async move {
                    if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < fail_first {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let sig = headers
                        .get("x-hashtale-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    c2.lock().unwrap().push((sig, body.to_vec()));
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), calls)
}

#[tokio::test]
async fn webhook_calls_stay_owed_until_the_endpoint_accepts_them() {
    let mut env = Env::sqlite_local("outbox_hook").await;
    let (url, calls) = hook_server(1).await;
    env.cfg.worker.webhook_url = url;
    env.cfg.worker.webhook_secret = "s3cret".into();
    let hook = Webhook::new(&env.cfg).unwrap();
    assert!(hook.is_some());
    let made = committed_results(
        &env,
        2,
        Owed {
            publish: false,
            webhook: true,
        },
    )
    .await;
    let ids: Vec<i64> = made.iter().map(|c| c.result_id).collect();
    assert_eq!(owed(&env, Outbox::Webhook).await, ids);
    // Without a broker nothing is owed to it.
    assert!(owed(&env, Outbox::Publish).await.is_empty());
    // The endpoint is down: the sweep stops at the first refusal and everything stays owed.
    let swept = sweep_outbox(&env.store, &env.queue, &hook, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(swept.webhooks, 0);
    assert_eq!(owed(&env, Outbox::Webhook).await, ids);
    // It is back: both calls go out, signed, and are marked sent.
    let swept = sweep_outbox(&env.store, &env.queue, &hook, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(swept.webhooks, 2);
    assert!(owed(&env, Outbox::Webhook).await.is_empty());
    let got = calls.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    for ((sig, body), id) in got.iter().zip(&ids) {
        assert_eq!(
            sig,
            &format!("sha256={}", hashtale_worker::sign("s3cret", body))
        );
        let m: ResultMessage = serde_json::from_slice(body).unwrap();
        assert_eq!(m.result_id, *id);
    }
    let swept = sweep_outbox(&env.store, &env.queue, &hook, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(swept.webhooks, 0);
    assert_eq!(calls.lock().unwrap().len(), 2);
    env.cleanup().await;
}

#[tokio::test]
async fn committing_twice_creates_and_announces_one_result() {
    for env in [
        Env::postgres_local("outbox_twice").await,
        Env::sqlite_local("outbox_twice").await,
    ] {
        let owe = Owed {
            publish: true,
            webhook: true,
        };
        let first = committed_results(&env, 3, owe).await;
        assert_eq!(first.len(), 3);
        // The same results again (a duplicate delivery processed concurrently): nothing new,
        // so nothing new to announce.
        let again: Vec<NewResult> = first
            .iter()
            .map(|c| NewResult {
                job_id: c.job_id,
                post_id: c.post_id,
                output: Default::default(),
                story: None,
                timings: Timings::default(),
            })
            .collect();
        let second = env
            .store
            .complete_with("outbox-v1", &again, owe)
            .await
            .unwrap();
        assert!(second.is_empty(), "{second:?}");
        assert_eq!(env.store.count("results").await.unwrap(), 3);
        let ids: Vec<i64> = first.iter().map(|c| c.result_id).collect();
        assert_eq!(owed(&env, Outbox::Publish).await, ids);
        env.store
            .mark_delivered(Outbox::Publish, &ids[..2])
            .await
            .unwrap();
        assert_eq!(owed(&env, Outbox::Publish).await, ids[2..].to_vec());
        assert_eq!(owed(&env, Outbox::Webhook).await, ids);
        env.cleanup().await;
    }
}

/// A webhook that never answers must not hold up inference: committed results are durable in
/// the outbox, so the worker hands them to delivery without waiting and keeps running batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_does_not_stall_the_worker() {
    let mut env = Env::postgres_rabbit("outbox_slow_hook").await;
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async {
            std::future::pending::<()>().await;
            axum::http::StatusCode::OK
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    env.cfg.worker.webhook_url = format!("http://{addr}/hook");
    env.cfg.worker.webhook_secret = "s3cret".into();
    // One image per batch: as many commits (and deliveries) as jobs.
    env.cfg.worker.batch_size = 1;
    env.cfg.worker.max_wait_ms = 0;
    let ing = Ingestor::new(env.store.clone(), env.queue.clone(), &env.cfg.fetch).unwrap();
    for i in 0..30 {
        ing.ingest(&NewPost {
            source: "slow-hook".into(),
            source_kind: "test".into(),
            external_id: format!("slow{i}"),
            image: ImageSource::Bytes(png(i)),
            caption: None,
        })
        .await
        .unwrap();
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = hashtale_worker::Worker {
        store: env.store.clone(),
        queue: env.queue.clone(),
        cfg: env.cfg.clone(),
        model: Arc::new(hashtale_worker::NoopModelForOverheadBench),
    };
    let task = tokio::spawn(worker.run(stop.clone()));
    let started = std::time::Instant::now();
    // The webhook client waits 10 s per call; a worker that waited on it would take minutes.
    pipeline_support::wait_until(8, "all 30 results", || async {
        env.store.count("results").await.unwrap() == 30
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(8));
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    env.cleanup().await;
}
