//! Backfill: enqueues every line once, resumes after an interruption, skips what is done.
mod pipeline_support;

use hashtale_scheduler::backfill::{run_backfill, BackfillOptions};
use hashtale_scheduler::Ingestor;
use hashtale_types::JobState;
use pipeline_support::{jobs_in, png, Env};

async fn backfill_suite(env: Env) {
    let dir = env.dir.path().join("bf");
    std::fs::create_dir_all(&dir).unwrap();
    let mut lines = String::from("path,external_id,caption\n");
    for i in 0..30u32 {
        std::fs::write(dir.join(format!("{i}.png")), png(i)).unwrap();
        lines.push_str(&format!("{i}.png,img-{i},caption {i}\n"));
    }
    lines.push_str("missing.png,gone,\n");
    let list = dir.join("list.csv");
    std::fs::write(&list, lines).unwrap();
    let ing = Ingestor::new(env.store.clone(), env.queue.clone(), &env.cfg.fetch).unwrap();
    let opts = BackfillOptions {
        file: list.clone(),
        source: None,
        rate: None,
        chunk: 10,
        progress_bar: false,
        max_bytes: 1 << 20,
    };
    // Interrupted before it starts: nothing done, resumable.
    let stopped = tokio_util::sync::CancellationToken::new();
    stopped.cancel();
    let r = run_backfill(&ing, &opts, stopped).await.unwrap();
    assert!(!r.finished);
    // Simulate an earlier run that committed the first chunk.
    for i in 0..10u32 {
        let post = hashtale_types::NewPost {
            source: "backfill:list.csv".into(),
            source_kind: "backfill".into(),
            external_id: format!("img-{i}"),
            image: hashtale_types::ImageSource::Bytes(png(i)),
            caption: None,
        };
        ing.ingest(&post).await.unwrap();
    }
    let key = format!(
        "{}|{}",
        std::fs::canonicalize(&list).unwrap().display(),
        std::fs::metadata(&list).unwrap().len()
    );
    let (id, _) = env.store.backfill_start(&key, 31).await.unwrap();
    env.store.backfill_progress(id, 10, false).await.unwrap();

    let rx = tokio_util::sync::CancellationToken::new();
    let r = run_backfill(&ing, &opts, rx.clone()).await.unwrap();
    assert!(r.finished);
    assert_eq!(
        (r.total, r.resumed_from, r.new_jobs, r.unreadable),
        (31, 10, 20, 1)
    );
    assert_eq!(env.store.count("posts").await.unwrap(), 30);
    assert_eq!(env.store.count("jobs").await.unwrap(), 30);
    // Running it again does nothing.
    let r = run_backfill(&ing, &opts, rx).await.unwrap();
    assert_eq!((r.resumed_from, r.new_jobs), (31, 0));
    assert_eq!(env.store.count("jobs").await.unwrap(), 30);
    let queued = jobs_in(&env.store, JobState::Queued).await;
    assert_eq!(queued, 30);
    env.cleanup().await;
}

#[tokio::test]
async fn backfill_resumes_on_postgres_rabbitmq() {
    backfill_suite(Env::postgres_rabbit("backfill").await).await;
}

#[tokio::test]
async fn backfill_resumes_on_sqlite() {
    backfill_suite(Env::sqlite_local("backfill").await).await;
}
