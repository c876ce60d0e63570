//! Fault: one image URL that drips a byte a second. Its batch goes on without it: the other
//! images are done while it is still being read; it then joins a later batch, or fails on its
//! own at its deadline. On Postgres + RabbitMQ (and the embedded SQLite + in-process queue).
mod pipeline_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hashtale_scheduler::Ingestor;
use hashtale_types::JobState;
use hashtale_types::{ImageSource, NewPost};
use hashtale_worker::{NoopModelForOverheadBench, Worker};
use pipeline_support::{jobs_in, png, serve, wait_until, Env, Files};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A server (on loopback, which the tests' fetch config allows) that answers every request
/// with a PNG sent one byte a second, until `finish` turns true: then the rest at once.
/// `sent` counts the body bytes sent so far.
struct Drip {
    url: String,
    sent: Arc<AtomicUsize>,
    finish: watch::Sender<bool>,
    body_len: usize,
}

async fn drip_server() -> Drip {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Arc::new(png(99));
    let sent = Arc::new(AtomicUsize::new(0));
    let (finish, finish_rx) = watch::channel(false);
    let (s, b) = (sent.clone(), body.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (sent, body, mut finish) = (s.clone(), b.clone(), finish_rx.clone());
            tokio::spawn(async move {
                let mut req = [0u8; 2048];
                let _ = sock.read(&mut req).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut i = 0;
                while i < body.len() {
                    if *finish.borrow() {
                        let _ = sock.write_all(&body[i..]).await;
                        sent.fetch_add(body.len() - i, Ordering::SeqCst);
                        break;
                    }
                    if sock.write_all(&body[i..i + 1]).await.is_err() {
                        return;
                    }
                    sock.flush().await.ok();
                    sent.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                    let _ = tokio::time::timeout(Duration::from_secs(1), finish.changed()).await;
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    Drip {
        url: format!("http://{addr}/drip.png"),
        sent,
        finish,
        body_len: body.len(),
    }
}

fn post(id: &str, url: String) -> NewPost {
    NewPost {
        source: "faults".into(),
        source_kind: "test".into(),
        external_id: id.into(),
        image: ImageSource::Url(url),
        caption: None,
    }
}

/// Ingests the dripping URL first, then 15 good ones; returns (drip job, good jobs).
async fn ingest_16(env: &Env, drip: &Drip) -> (i64, Vec<i64>) {
    let mut files = Files::new();
    for i in 0..15 {
        files.insert(format!("img/{i}.png"), ("image/png".into(), png(i)));
    }
    let good = serve(files).await;
    let ing = Ingestor::new(env.store.clone(), env.queue.clone(), &env.cfg.fetch).unwrap();
    let drip_job = ing
        .ingest(&post("drip", drip.url.clone()))
        .await
        .unwrap()
        .job_id
        .unwrap();
    let mut jobs = Vec::new();
    for i in 0..15 {
        let url = format!("http://{good}/img/{i}.png");
        let job = ing.ingest(&post(&format!("good{i}"), url)).await.unwrap();
        jobs.push(job.job_id.unwrap());
    }
    (drip_job, jobs)
}

fn start_worker(
    env: &Env,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<hashtale_core::Result<()>>,
) {
    let stop = CancellationToken::new();
    let worker = Worker {
        store: env.store.clone(),
        queue: env.queue.clone(),
        cfg: env.cfg.clone(),
        model: Arc::new(NoopModelForOverheadBench),
    };
    (stop.clone(), tokio::spawn(worker.run(stop)))
}

async fn state_of(env: &Env, job: i64) -> JobState {
    env.store.job(job).await.unwrap().unwrap().state
}

/// The 15 good images are done while the dripping one is still being read (its deadline is a
/// minute away); once the server finishes it, it joins a later batch and is done too. Without
/// the per-batch fetch wait, its batch (and every batch after it) waits for it.
async fn dripping_url_does_not_hold_up_the_others(mut env: Env) {
    env.cfg.worker.batch_size = 8;
    // Batches fill up: the dripping job shares its batch with 7 good ones.
    env.cfg.worker.max_wait_ms = 300;
    env.cfg.fetch.timeout_ms = 60_000;
    let drip = drip_server().await;
    let (drip_job, good) = ingest_16(&env, &drip).await;
    let (stop, task) = start_worker(&env);

    wait_until(30, "the 15 good jobs done", || async {
        jobs_in(&env.store, JobState::Done).await >= 15
    })
    .await;
    // Ordering, not timing: all 15 finished while the dripping one is in flight.
    for id in &good {
        assert_eq!(state_of(&env, *id).await, JobState::Done, "job {id}");
    }
    assert_eq!(state_of(&env, drip_job).await, JobState::Running);
    let sent = drip.sent.load(Ordering::SeqCst);
    assert!(
        sent < drip.body_len,
        "the dripping image is still being read ({sent} of {} bytes)",
        drip.body_len
    );

    // The server finishes: the late image joins a later batch.
    drip.finish.send(true).unwrap();
    wait_until(30, "the dripping job done", || async {
        state_of(&env, drip_job).await == JobState::Done
    })
    .await;
    assert_eq!(env.store.count("results").await.unwrap(), 16);
    let row = env.store.job(drip_job).await.unwrap().unwrap();
    assert_eq!(row.attempts, 1, "the late job was not retried");

    stop.cancel();
    task.await
        .unwrap()
        .expect("the worker ends cleanly (no ack of an unknown tag)");
    if let Some(r) = env.queue.rabbit() {
        // Nothing was left unacknowledged (the channel is closed, so it would be back).
        let depth = r.depth(&r.names.jobs).await.unwrap();
        assert_eq!(depth, 0, "messages left on the jobs queue");
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dripping_url_does_not_hold_up_the_others_rabbitmq() {
    dripping_url_does_not_hold_up_the_others(Env::postgres_rabbit("faults_fetch").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dripping_url_does_not_hold_up_the_others_embedded() {
    dripping_url_does_not_hold_up_the_others(Env::sqlite_local("faults_fetch").await).await;
}

/// A URL that never finishes fails on its own at its total deadline (not retried here), and
/// the others are not held up by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_that_never_finishes_fails_alone_at_its_deadline() {
    let mut env = Env::postgres_rabbit("faults_fetch_deadline").await;
    env.cfg.worker.batch_size = 8;
    env.cfg.worker.max_wait_ms = 300;
    env.cfg.fetch.timeout_ms = 4_000;
    env.cfg.queue.max_attempts = 1;
    let drip = drip_server().await;
    let (drip_job, good) = ingest_16(&env, &drip).await;
    let (stop, task) = start_worker(&env);
    wait_until(30, "every job finished", || async {
        jobs_in(&env.store, JobState::Done).await + jobs_in(&env.store, JobState::Failed).await
            == 16
    })
    .await;
    for id in &good {
        assert_eq!(state_of(&env, *id).await, JobState::Done, "job {id}");
    }
    let row = env.store.job(drip_job).await.unwrap().unwrap();
    assert_eq!(row.state, JobState::Failed);
    let reason = row.last_error.unwrap_or_default();
    assert!(reason.contains("deadline"), "{reason}");
    assert!(drip.sent.load(Ordering::SeqCst) < drip.body_len);
    stop.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}
