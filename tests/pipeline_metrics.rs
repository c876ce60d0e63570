//! Every long-running process serves Prometheus `/metrics` on its own port: here a
//! `hashtale worker` process, scraped after it finished a job, shows its counters.
mod pipeline_support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use hashtale_scheduler::Ingestor;
use hashtale_types::JobState;
use hashtale_types::{ImageSource, NewPost};
use pipeline_support::{amqp_url, jobs_in, pg_url, png, wait_until, Env};

/// GET `path` over plain HTTP/1.0; the whole response as text.
fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_process_serves_its_metrics_on_its_own_port() {
    let env = Env::postgres_rabbit("metrics").await;
    let ing = Ingestor::new(env.store.clone(), env.queue.clone(), &env.cfg.fetch).unwrap();
    ing.ingest(&NewPost {
        source: "metrics".into(),
        source_kind: "test".into(),
        external_id: "m1".into(),
        image: ImageSource::Bytes(png(1)),
        caption: None,
    })
    .await
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut worker = Command::new(env!("CARGO_BIN_EXE_hashtale"))
        .args(["worker", "--metrics-listen", &addr])
        .env("HASHTALE__DATABASE__URL", pg_url())
        .env("HASHTALE__DATABASE__SCHEMA", env.schema.as_deref().unwrap())
        .env("HASHTALE__QUEUE__KIND", "rabbitmq")
        .env("HASHTALE__QUEUE__AMQP_URL", amqp_url())
        .env("HASHTALE__QUEUE__PREFIX", &env.cfg.queue.prefix)
        .env(
            "HASHTALE__QUEUE__RETRY_BACKOFF_MS",
            env.cfg.queue.retry_backoff_ms.to_string(),
        )
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("starting hashtale worker");
    wait_until(180, "the job done", || async {
        jobs_in(&env.store, JobState::Done).await == 1
    })
    .await;
    // The counter is bumped right after the commit; give the scrape a few tries.
    let mut text = String::new();
    for _ in 0..50 {
        text = http_get(&addr, "/metrics").unwrap_or_default();
        if text.contains("hashtale_jobs_succeeded_total 1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let status = worker.wait().unwrap();
    assert!(
        text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE hashtale_jobs_succeeded_total counter"),
        "{text}"
    );
    assert!(text.contains("hashtale_jobs_succeeded_total 1"), "{text}");
    assert!(text.contains("hashtale_batch_size_bucket"), "{text}");
    assert!(status.success(), "worker exit: {status:?}");
    env.cleanup().await;
}
