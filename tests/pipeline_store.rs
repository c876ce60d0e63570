//! The store on both backends: the same checks run on Postgres and on SQLite.
mod pipeline_support;

use hashtale_queue::LocalQueue;
use hashtale_store::NewResult;
use hashtale_store::Store;
use hashtale_types::JobState;
use hashtale_types::{now_ms, ImageSource, NewPost, Timings};
use pipeline_support::{png, Env};

fn post(source: &str, id: &str, image: ImageSource) -> NewPost {
    NewPost {
        source: source.into(),
        source_kind: "test".into(),
        external_id: id.into(),
        image,
        caption: Some(format!("caption {id}")),
    }
}

async fn store_suite(store: &Store) {
    // Posts are unique per (source, external id); a known post makes no second job.
    let a = store
        .ingest(
            &post("s1", "a", ImageSource::Bytes(png(1))),
            JobState::Queued,
        )
        .await
        .unwrap();
    assert!(a.job_id.is_some());
    let again = store
        .ingest(
            &post("s1", "a", ImageSource::Bytes(png(1))),
            JobState::Queued,
        )
        .await
        .unwrap();
    assert_eq!(again.post_id, a.post_id);
    assert_eq!(again.job_id, None);
    // Same external id in another source is another post; identical bytes share one blob.
    let b = store
        .ingest(
            &post("s2", "a", ImageSource::Bytes(png(1))),
            JobState::Queued,
        )
        .await
        .unwrap();
    assert_ne!(b.post_id, a.post_id);
    assert_eq!(store.count("blobs").await.unwrap(), 1);
    let c = store
        .ingest(
            &post(
                "s1",
                "c",
                ImageSource::Url("http://example.com/c.png".into()),
            ),
            JobState::Pending,
        )
        .await
        .unwrap();
    assert_eq!(store.count("posts").await.unwrap(), 3);
    assert_eq!(store.count("jobs").await.unwrap(), 3);
    assert_eq!(
        store.pending_jobs(10).await.unwrap(),
        vec![(c.job_id.unwrap(), c.post_id)]
    );
    store.mark_queued(&[c.job_id.unwrap()]).await.unwrap();
    assert!(store.pending_jobs(10).await.unwrap().is_empty());

    // Claiming (local queue) counts attempts and hands each job out once.
    let local = LocalQueue::new(store.clone());
    let claimed = local.claim(2).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|c| c.attempts == 0));
    let rest = local.claim(10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert!(local.claim(10).await.unwrap().is_empty());

    // A retry is not due before its time; a restart requeues running jobs.
    let j = claimed[0].job_id;
    store
        .fail_job(j, "flaky network", JobState::Queued, now_ms() + 60_000)
        .await
        .unwrap();
    assert!(local.claim(10).await.unwrap().is_empty());
    assert_eq!(
        store.job(j).await.unwrap().unwrap().last_error.as_deref(),
        Some("flaky network")
    );
    assert_eq!(local.requeue_running().await.unwrap(), 2);

    // Work items carry the image; results are unique per (post, model version).
    let items = store
        .start_jobs(&[a.job_id.unwrap(), c.job_id.unwrap()])
        .await
        .unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].image, ImageSource::Bytes(png(1)));
    assert_eq!(
        items[1].image,
        ImageSource::Url("http://example.com/c.png".into())
    );
    assert!(items.iter().all(|i| i.state == JobState::Running));
    let result = |job_id, post_id, tag: &str| {
        NewResult {
        job_id,
        post_id,
        output: serde_json::from_value(serde_json::json!({ "hashtags": [{ "tag": tag, "score": 0.5, "attention": vec![0.02f32; 49] }], "story": "once" })).unwrap(),
        story: Some("once".into()),
        timings: Timings::default(),
    }
    };
    store
        .complete("v1", &[result(a.job_id.unwrap(), a.post_id, "first")])
        .await
        .unwrap();
    store
        .complete("v1", &[result(a.job_id.unwrap(), a.post_id, "second")])
        .await
        .unwrap();
    let rs = store.results_for_post(a.post_id).await.unwrap();
    assert_eq!(rs.len(), 1, "re-delivery must not duplicate results");
    assert_eq!(rs[0].output.hashtags[0].tag, "first");
    assert_eq!(rs[0].output.hashtags[0].attention.len(), 49);
    assert_eq!(rs[0].story.as_deref(), Some("once"));
    // A new model version is a new result.
    store
        .complete("v2", &[result(a.job_id.unwrap(), a.post_id, "v2")])
        .await
        .unwrap();
    assert_eq!(store.results_for_post(a.post_id).await.unwrap().len(), 2);
    assert_eq!(store.count("model_versions").await.unwrap(), 2);
    let done = store.job(a.job_id.unwrap()).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Done);
    // A done job delivered again is reported done, not restarted.
    let again = store.start_jobs(&[a.job_id.unwrap()]).await.unwrap();
    assert_eq!(again[0].state, JobState::Done);
    // (claimed, requeued, started once: one attempt; the redelivery adds none)
    assert_eq!(
        store
            .job(a.job_id.unwrap())
            .await
            .unwrap()
            .unwrap()
            .attempts,
        1
    );
    // Failed for good keeps its reason.
    store
        .fail_job(
            c.job_id.unwrap(),
            "not an image",
            JobState::Failed,
            now_ms(),
        )
        .await
        .unwrap();
    let failed = store.job(c.job_id.unwrap()).await.unwrap().unwrap();
    assert_eq!(
        (failed.state, failed.last_error.as_deref()),
        (JobState::Failed, Some("not an image"))
    );
    assert!(failed.finished_at.is_some());

    // Paging.
    let page = store.results_page(0, 0, 1).await.unwrap();
    assert_eq!(page.len(), 1);
    let next = store.results_page(0, page[0].id, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert!(store
        .results_page(now_ms() + 1000, 0, 10)
        .await
        .unwrap()
        .is_empty());
    let counts = store.job_counts().await.unwrap();
    assert_eq!(counts.len(), JobState::ALL.len());
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<i64>(), 3);

    // Feed validators and backfill progress.
    let sid = store.source_id("feed:x", "feed").await.unwrap();
    assert_eq!(store.source_id("feed:x", "feed").await.unwrap(), sid);
    store
        .set_feed_validators(sid, Some("\"e1\""), None)
        .await
        .unwrap();
    assert_eq!(
        store.feed_validators(sid).await.unwrap(),
        (Some("\"e1\"".into()), None)
    );
    let (bid, done) = store.backfill_start("file|1", 10).await.unwrap();
    assert_eq!(done, 0);
    store.backfill_progress(bid, 4, false).await.unwrap();
    assert_eq!(store.backfill_start("file|1", 10).await.unwrap(), (bid, 4));
    // Many at once: in order, a repeat within the chunk and a known post make no job.
    let many = [
        post("s3", "m1", ImageSource::Bytes(png(5))),
        post(
            "s3",
            "m2",
            ImageSource::Url("http://example.com/m2.png".into()),
        ),
        post("s3", "m1", ImageSource::Bytes(png(5))),
        post("s1", "a", ImageSource::Bytes(png(1))),
    ];
    let r = store.ingest_many(&many, JobState::Queued).await.unwrap();
    assert!(r[0].job_id.is_some() && r[1].job_id.is_some());
    assert_ne!(r[0].job_id, r[1].job_id);
    assert_eq!((r[2].post_id, r[2].job_id), (r[0].post_id, None));
    assert_eq!((r[3].post_id, r[3].job_id), (a.post_id, None));
    assert_eq!(store.count("posts").await.unwrap(), 5);
    assert_eq!(store.count("jobs").await.unwrap(), 5);
    assert!(store
        .ingest_many(&[], JobState::Queued)
        .await
        .unwrap()
        .is_empty());
    // A chunk whose images add up to more than one statement may bind goes in several.
    let big = hashtale_store::MAX_INGEST_STATEMENT_BYTES / 3 + 1;
    let photos: Vec<_> = (0..4u8)
        .map(|i| {
            let mut bytes = png(40 + i as u32);
            bytes.resize(big, i);
            post("s4", &format!("big{i}"), ImageSource::Bytes(bytes))
        })
        .collect();
    let r = store.ingest_many(&photos, JobState::Queued).await.unwrap();
    assert_eq!(r.len(), 4);
    assert!(r.iter().all(|x| x.job_id.is_some()));
    assert_eq!(store.count("posts").await.unwrap(), 9);
    store.ping().await.unwrap();
    // Migrations are idempotent.
    store.migrate().await.unwrap();
}

#[tokio::test]
async fn store_on_postgres() {
    let env = Env::postgres_local("store").await;
    store_suite(&env.store).await;
    env.cleanup().await;
}

#[tokio::test]
async fn store_on_sqlite() {
    let env = Env::sqlite_local("store").await;
    assert_eq!(env.store.backend(), "sqlite");
    store_suite(&env.store).await;
    env.cleanup().await;
}
