//! Shutdown waits for in-flight work: a `hashtale scheduler` process told to stop (SIGTERM)
//! while a feed poll is in progress finishes the poll (its posts committed, their jobs
//! published) before it exits. On Postgres + RabbitMQ.
mod pipeline_support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header;
use hashtale_types::JobState;
use pipeline_support::{amqp_url, jobs_in, pg_url, rss, wait_until, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_finishes_a_feed_poll_in_progress_before_exiting() {
    let env = Env::postgres_rabbit("shutdown").await;
    // A feed that takes 2 s to answer; `asked` counts its requests.
    let asked = Arc::new(AtomicUsize::new(0));
    let a2 = asked.clone();
    let body = rss("http://images.example", &[1, 2, 3]);
    let app = axum::Router::new().route(
        "/feed.xml",
        axum::routing::get(move || {
            let (a2, body) = (a2.clone(), body.clone());
            async move {
                a2.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(2)).await;
                ([(header::CONTENT_TYPE, "application/rss+xml")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut child = Command::new(env!("CARGO_BIN_EXE_hashtale"))
        .args(["scheduler", "--feed", &format!("http://{addr}/feed.xml")])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .env("HASHTALE__DATABASE__URL", pg_url())
        .env("HASHTALE__DATABASE__SCHEMA", env.schema.as_deref().unwrap())
        .env("HASHTALE__QUEUE__KIND", "rabbitmq")
        .env("HASHTALE__QUEUE__AMQP_URL", amqp_url())
        .env("HASHTALE__QUEUE__PREFIX", &env.cfg.queue.prefix)
        .env("HASHTALE__SCHEDULER__INGEST", "false")
        .env("HASHTALE__FETCH__ALLOW_PRIVATE", "true")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("starting hashtale scheduler");
    wait_until(60, "the scheduler polling the feed", || async {
        asked.load(Ordering::SeqCst) > 0
    })
    .await;
    // Stop it while the feed is still answering.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the scheduler did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status:?}");
    // The poll in progress was finished: its posts are stored and their jobs published.
    assert_eq!(env.store.count("posts").await.unwrap(), 3);
    assert_eq!(jobs_in(&env.store, JobState::Queued).await, 3);
    assert_eq!(jobs_in(&env.store, JobState::Pending).await, 0);
    env.cleanup().await;
}
