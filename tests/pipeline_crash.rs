//! Crash safety: a `hashtale worker` process killed with SIGKILL mid-run loses nothing; a
//! second worker finishes, every post has exactly one result, every result is announced on the
//! results exchange (the outbox sweep covers a kill between commit and publish), and SIGTERM
//! stops it cleanly.
mod pipeline_support;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use hashtale_scheduler::Ingestor;
use hashtale_store::Outbox;
use hashtale_types::JobState;
use hashtale_types::ResultMessage;
use hashtale_types::{ImageSource, NewPost};
use pipeline_support::{jobs_in, png, wait_until, Env};

fn spawn_worker(env: &Env) -> Child {
    env.hashtale(&["worker"])
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("starting hashtale worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_loses_nothing_and_duplicates_nothing() {
    let env = Env::postgres_rabbit("crash").await;
    let ing = Ingestor::new(env.store.clone(), env.queue.clone(), &env.cfg.fetch).unwrap();
    const N: i64 = 96;
    for i in 0..N as u32 {
        ing.ingest(&NewPost {
            source: "crash".into(),
            source_kind: "test".into(),
            external_id: format!("c{i}"),
            image: ImageSource::Bytes(png(i)),
            caption: None,
        })
        .await
        .unwrap();
    }
    // Every result id announced, from both workers.
    let announced: Arc<Mutex<HashSet<i64>>> = Default::default();
    let mut sub = env
        .queue
        .rabbit()
        .unwrap()
        .subscribe_results()
        .await
        .unwrap();
    let a2 = announced.clone();
    tokio::spawn(async move {
        while let Some(Ok(d)) = sub.next().await {
            let m: ResultMessage = serde_json::from_slice(&d.data).unwrap();
            a2.lock().unwrap().insert(m.result_id);
        }
    });
    let mut first = spawn_worker(&env);
    // Kill it as soon as it has committed something, with more in hand.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = env.store.count("results").await.unwrap();
        if done > 0 {
            break;
        }
        assert!(first.try_wait().unwrap().is_none(), "worker exited early");
        assert!(
            Instant::now() < deadline,
            "the first worker produced nothing"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let at_kill = env.store.count("results").await.unwrap();
    assert!(
        at_kill < N,
        "the first worker finished everything before it was killed"
    );

    let mut second = spawn_worker(&env);
    wait_until(900, "every job done", || async {
        jobs_in(&env.store, JobState::Done).await == N
    })
    .await;
    assert_eq!(env.store.count("results").await.unwrap(), N);
    let mut ids = HashSet::new();
    for post_id in 1..=N {
        let rs = env.store.results_for_post(post_id).await.unwrap();
        assert_eq!(rs.len(), 1, "post {post_id} has {} results", rs.len());
        ids.insert(rs[0].id);
    }
    // Announced at least once each (the sweep runs every 10 s for results over 5 s old).
    wait_until(60, "every result announced", || async {
        announced.lock().unwrap().is_superset(&ids)
    })
    .await;
    // …and recorded as such (confirmed deliveries are recorded within 200 ms).
    wait_until(10, "the outbox drained", || async {
        env.store
            .owed_results(Outbox::Publish, 0, i64::MAX, 10)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    // Graceful shutdown on SIGTERM.
    let pid = second.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let t = Instant::now();
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "worker ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "worker exited with {status}");
    env.cleanup().await;
}
