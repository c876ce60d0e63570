//! End to end with the real models: a watched folder and a feed served by the test →
//! scheduler → queue → batching worker → store (+ result messages); poison inputs; the same
//! post delivered twice. On Postgres + RabbitMQ and on SQLite + the in-process queue.
mod pipeline_support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hashtale_fetch::Fetcher;
use hashtale_scheduler::{dir, feed, Ingestor};
use hashtale_store::Outbox;
use hashtale_types::JobState;
use hashtale_types::{ImageSource, JobMessage, NewPost, ResultMessage};
use hashtale_worker::Worker;
use pipeline_support::{jobs_in, jpeg, model, png, rss, serve, wait_until, Env, Files};
use tokio_util::sync::CancellationToken;

/// Starts a worker with the real models; returns its stop switch and task.
fn start_worker(
    env: &Env,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<hashtale_core::Result<()>>,
) {
    let stop = CancellationToken::new();
    let w = Worker {
        store: env.store.clone(),
        queue: env.queue.clone(),
        cfg: env.cfg.clone(),
        model: model(),
    };
    (stop.clone(), tokio::spawn(w.run(stop)))
}

/// Post ids and result ids seen on the results exchange.
type Seen = Arc<std::sync::Mutex<(HashSet<i64>, HashSet<i64>)>>;

/// Counts result messages on the results exchange (RabbitMQ only), by post and result id.
async fn count_result_messages(env: &Env) -> Option<(Arc<AtomicUsize>, Seen)> {
    let rabbit = env.queue.rabbit()?.clone();
    let mut sub = rabbit.subscribe_results().await.unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let seen: Seen = Default::default();
    let (n2, s2) = (n.clone(), seen.clone());
    tokio::spawn(async move {
        while let Some(Ok(d)) = sub.next().await {
            let m: ResultMessage = serde_json::from_slice(&d.data).unwrap();
            let mut s = s2.lock().unwrap();
            s.0.insert(m.post_id);
            s.1.insert(m.result_id);
            n2.fetch_add(1, Ordering::SeqCst);
        }
    });
    Some((n, seen))
}

/// Checks one result's shape: ranked hashtags with scores and 7×7 attention maps.
fn check_output(out: &hashtale_types::ImageResult) {
    assert!(!out.hashtags.is_empty(), "no hashtags in {out:?}");
    for t in &out.hashtags {
        assert!(!t.tag.is_empty(), "{t:?}");
        assert!((0.0..=1.0).contains(&t.score), "score {}", t.score);
        // 7×7 attention weights (none for a model without attention).
        let n = t.attention.len();
        assert!(n == 49 || n == 0, "attention of {n} weights");
    }
}

async fn two_hundred_posts(env: Env) {
    let photos = env.dir.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for i in 0..100u32 {
        let (name, bytes) = if i % 2 == 0 {
            (format!("p{i:03}.png"), png(i))
        } else {
            (format!("p{i:03}.jpg"), jpeg(i))
        };
        std::fs::write(photos.join(name), bytes).unwrap();
    }
    // The feed: 50 items whose images the same test server serves.
    let mut files = Files::new();
    let ids: Vec<u32> = (1000..1050).collect();
    for i in &ids {
        files.insert(format!("img/{i}.png"), ("image/png".into(), png(*i)));
    }
    let addr = serve(files.clone()).await;
    let base = format!("http://{addr}");
    files.insert(
        "feed.xml".into(),
        ("application/rss+xml".into(), rss(&base, &ids).into_bytes()),
    );
    let addr = serve(files).await;
    let feed_url = format!("http://{addr}/feed.xml");

    let messages = count_result_messages(&env).await;
    let ing = Ingestor::new(env.store.clone(), env.queue.clone(), &env.cfg.fetch).unwrap();
    let (stop, worker) = start_worker(&env);
    let stop_dir = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(dir::watch_dir(
        ing.clone(),
        photos.clone(),
        1 << 24,
        stop_dir.clone(),
    ));
    wait_until(60, "the initial scan", || async {
        env.store.count("posts").await.unwrap() >= 100
    })
    .await;
    // 50 more files appear while the folder is watched.
    for i in 100..150u32 {
        std::fs::write(photos.join(format!("late{i:03}.png")), png(i)).unwrap();
    }
    let fetcher = Fetcher::new(&env.cfg.fetch).unwrap();
    assert_eq!(
        feed::poll_once(&ing, &fetcher, &feed_url).await.unwrap(),
        50
    );
    // Polling again finds only known posts: no new jobs.
    assert_eq!(feed::poll_once(&ing, &fetcher, &feed_url).await.unwrap(), 0);

    wait_until(900, "200 done jobs", || async {
        jobs_in(&env.store, JobState::Done).await >= 200
    })
    .await;
    assert_eq!(env.store.count("posts").await.unwrap(), 200);
    assert_eq!(env.store.count("jobs").await.unwrap(), 200);
    assert_eq!(env.store.count("results").await.unwrap(), 200);
    assert_eq!(jobs_in(&env.store, JobState::Failed).await, 0);
    let mut seen = HashSet::new();
    let mut result_ids = HashSet::new();
    let mut after = 0;
    loop {
        let page = env.store.results_page(0, after, 64).await.unwrap();
        if page.is_empty() {
            break;
        }
        for r in &page {
            assert!(seen.insert(r.post_id), "post {} has two results", r.post_id);
            result_ids.insert(r.id);
            check_output(&r.output);
            after = r.id;
        }
    }
    assert_eq!(seen.len(), 200);
    if let Some((n, got)) = &messages {
        wait_until(30, "200 result messages", || {
            let n = n.clone();
            async move { n.load(Ordering::SeqCst) >= 200 }
        })
        .await;
        {
            let got = got.lock().unwrap();
            assert_eq!(got.0.len(), 200);
            assert_eq!(got.1, result_ids, "messages carry the results' ids");
        }
        // Every publish confirmed and recorded: the outbox owes nothing.
        wait_until(30, "the outbox drained", || async {
            env.store
                .owed_results(Outbox::Publish, 0, i64::MAX, 10)
                .await
                .unwrap()
                .is_empty()
        })
        .await;
    }
    stop_dir.cancel();
    watcher.await.unwrap().unwrap();
    stop.cancel();
    worker.await.unwrap().unwrap();
    if let Some(rabbit) = env.queue.rabbit() {
        // The worker's channel is closed: anything it had not acknowledged would be back.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(rabbit.depth(&rabbit.names.jobs).await.unwrap(), 0);
        assert_eq!(
            messages.unwrap().0.load(Ordering::SeqCst),
            200,
            "no duplicates"
        );
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_200_posts_postgres_rabbitmq() {
    two_hundred_posts(Env::postgres_rabbit("e2e").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_200_posts_sqlite_embedded() {
    two_hundred_posts(Env::sqlite_local("e2e").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_inputs_fail_with_reasons_and_the_rest_succeeds() {
    let mut env = Env::postgres_rabbit("poison").await;
    env.cfg.worker.max_wait_ms = 200; // good and bad posts share batches
    let photos = env.dir.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for i in 0..6u32 {
        std::fs::write(photos.join(format!("good{i}.png")), png(i)).unwrap();
    }
    std::fs::write(photos.join("corrupt.png"), &png(99)[..60]).unwrap();
    std::fs::write(
        photos.join("notimage.jpg"),
        b"this is a text file, not a photo",
    )
    .unwrap();
    let ing = Ingestor::new(env.store.clone(), env.queue.clone(), &env.cfg.fetch).unwrap();
    for f in dir::scan(&photos).unwrap() {
        ing.ingest(&dir::post_for(&photos, &f, 1 << 24).unwrap())
            .await
            .unwrap();
    }
    // Unreachable (nothing listens on port 1): retried, then parked. 404: failed at once.
    let url_post = |id: &str, url: String| NewPost {
        source: "urls".into(),
        source_kind: "test".into(),
        external_id: id.into(),
        image: ImageSource::Url(url),
        caption: None,
    };
    let unreachable = ing
        .ingest(&url_post("down", "http://127.0.0.1:1/x.png".into()))
        .await
        .unwrap();
    let addr = serve(Files::new()).await;
    let missing = ing
        .ingest(&url_post("404", format!("http://{addr}/gone.png")))
        .await
        .unwrap();

    let (stop, worker) = start_worker(&env);
    wait_until(600, "all ten jobs settled", || async {
        jobs_in(&env.store, JobState::Done).await + jobs_in(&env.store, JobState::Failed).await
            == 10
    })
    .await;
    assert_eq!(jobs_in(&env.store, JobState::Done).await, 6);
    assert_eq!(env.store.count("results").await.unwrap(), 6);
    let reason = |id: i64| {
        let store = env.store.clone();
        async move { store.job(id).await.unwrap().unwrap() }
    };
    for f in ["corrupt.png", "notimage.jpg"] {
        let post = dir::post_for(&photos, &photos.join(f), 1 << 24).unwrap();
        let r = env.store.ingest(&post, JobState::Pending).await.unwrap();
        let job = env.store.job_for_post(r.post_id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(job.attempts, 1, "bad input is not retried");
        let e = job.last_error.unwrap();
        assert!(
            e.contains("decode") || e.contains("not an image"),
            "{f}: {e}"
        );
    }
    let down = reason(unreachable.job_id.unwrap()).await;
    assert_eq!(down.state, JobState::Failed);
    assert_eq!(down.attempts, 3, "transient failures use every attempt");
    assert!(down.last_error.unwrap().contains("fetch failed"));
    let gone = reason(missing.job_id.unwrap()).await;
    assert_eq!(gone.attempts, 1);
    assert!(gone.last_error.unwrap().contains("404"));
    let rabbit = env.queue.rabbit().unwrap().clone();
    wait_until(10, "4 parked jobs", || async {
        rabbit.depth(&rabbit.names.dead).await.unwrap() == 4
    })
    .await;
    // The worker is still running: a new good post goes through.
    ing.ingest(&url_post("late", String::new()).clone_with_bytes(png(42)))
        .await
        .unwrap();
    wait_until(300, "the late post", || async {
        jobs_in(&env.store, JobState::Done).await == 7
    })
    .await;
    stop.cancel();
    worker.await.unwrap().unwrap();
    env.cleanup().await;
}

/// A webhook call seen by the test: signature header and body.
type Hook = (String, Vec<u8>);

trait WithBytes {
    fn clone_with_bytes(self, b: Vec<u8>) -> NewPost;
}

impl WithBytes for NewPost {
    fn clone_with_bytes(mut self, b: Vec<u8>) -> NewPost {
        self.image = ImageSource::Bytes(b);
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_post_delivered_twice_gives_one_result() {
    let mut env = Env::postgres_rabbit("idem").await;
    // Results are also POSTed, signed, to a webhook the test serves.
    let hooks: Arc<std::sync::Mutex<Vec<Hook>>> = Default::default();
    let h2 = hooks.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let h2 = h2.clone();
                async move {
                    let sig = headers
                        .get("x-hashtale-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    h2.lock().unwrap().push((sig, body.to_vec()));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    env.cfg.worker.webhook_url = format!("http://{hook_addr}/hook");
    env.cfg.worker.webhook_secret = "hook-secret".into();
    let messages = count_result_messages(&env).await.unwrap();
    let ing = Ingestor::new(env.store.clone(), env.queue.clone(), &env.cfg.fetch).unwrap();
    let post = NewPost {
        source: "twice".into(),
        source_kind: "test".into(),
        external_id: "one".into(),
        image: ImageSource::Bytes(png(5)),
        caption: None,
    };
    let r = ing.ingest(&post).await.unwrap();
    // Ingesting it again makes no job; publishing its job message again duplicates delivery.
    assert_eq!(ing.ingest(&post).await.unwrap().job_id, None);
    let msg = JobMessage {
        job_id: r.job_id.unwrap(),
        post_id: r.post_id,
    };
    env.queue
        .rabbit()
        .unwrap()
        .publish_jobs(&[msg])
        .await
        .unwrap();
    let (stop, worker) = start_worker(&env);
    wait_until(300, "the job done", || async {
        jobs_in(&env.store, JobState::Done).await == 1
    })
    .await;
    let rabbit = env.queue.rabbit().unwrap().clone();
    wait_until(60, "both deliveries consumed", || async {
        rabbit.depth(&rabbit.names.jobs).await.unwrap() == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!(
        env.store.results_for_post(r.post_id).await.unwrap().len(),
        1
    );
    assert_eq!(env.store.count("results").await.unwrap(), 1);
    assert_eq!(messages.1.lock().unwrap().0.len(), 1);
    assert_eq!(
        messages.0.load(Ordering::SeqCst),
        1,
        "one result, one message"
    );
    wait_until(30, "the webhook call", || async {
        !hooks.lock().unwrap().is_empty()
    })
    .await;
    let (sig, body) = hooks.lock().unwrap()[0].clone();
    assert_eq!(
        sig,
        format!("sha256={}", hashtale_worker::sign("hook-secret", &body))
    );
    let m: ResultMessage = serde_json::from_slice(&body).unwrap();
    assert_eq!(m.post_id, r.post_id);
    assert_eq!(hooks.lock().unwrap().len(), 1);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_delivered_again_after_its_last_attempt_is_parked_not_rerun() {
    let env = Env::postgres_rabbit("giveup").await;
    let ing = Ingestor::new(env.store.clone(), env.queue.clone(), &env.cfg.fetch).unwrap();
    let r = ing
        .ingest(&NewPost {
            source: "giveup".into(),
            source_kind: "test".into(),
            external_id: "crasher".into(),
            image: ImageSource::Bytes(png(8)),
            caption: None,
        })
        .await
        .unwrap();
    let job_id = r.job_id.unwrap();
    // Three attempts started and never finished (say, the input crashed three workers): the
    // message is still in the queue, as after each crash.
    for _ in 0..env.cfg.queue.max_attempts {
        env.store.start_jobs(&[job_id]).await.unwrap();
    }
    let (stop, worker) = start_worker(&env);
    wait_until(300, "the job settled", || async {
        jobs_in(&env.store, JobState::Failed).await == 1
    })
    .await;
    let job = env.store.job(job_id).await.unwrap().unwrap();
    assert_eq!(job.attempts, 4);
    let e = job.last_error.unwrap();
    assert!(e.contains("gave up"), "{e}");
    assert_eq!(env.store.count("results").await.unwrap(), 0);
    let rabbit = env.queue.rabbit().unwrap().clone();
    wait_until(10, "the parked job", || async {
        rabbit.depth(&rabbit.names.dead).await.unwrap() == 1
    })
    .await;
    stop.cancel();
    worker.await.unwrap().unwrap();
    env.cleanup().await;
}
