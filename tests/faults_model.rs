//! Fault: an image that crashes the model. It fails alone, with its reason, and is not retried;
//! the other images of its batch get their results. On Postgres + RabbitMQ.
mod pipeline_support;

use std::io::Cursor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hashtale_models::pipeline::ModelInput;
use hashtale_scheduler::Ingestor;
use hashtale_types::JobState;
use hashtale_types::{ImageSource, NewPost};
use hashtale_worker::{ModelStep, NoopModelForOverheadBench, Worker};
use pipeline_support::{jobs_in, png, wait_until, Env};

/// Width of the image the stand-in model panics on (the test's other images are 48 px wide).
const POISON_WIDTH: u32 = 7;

/// The zero-cost model stand-in, made to panic on any batch that holds the poison image, as a
/// model bug triggered by one input would.
struct CrashesOnOneImage {
    calls: AtomicUsize,
}

impl ModelStep for CrashesOnOneImage {
    fn version(&self) -> String {
        "crashes-on-one-image".into()
    }
    fn run_batch(&self, images: &[ModelInput]) -> Result<Vec<hashtale_types::ImageResult>, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if images.iter().any(|i| i.image.width() == POISON_WIDTH) {
            panic!("index out of bounds in a layer");
        }
        NoopModelForOverheadBench.run_batch(images)
    }
}

fn poison_png() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(POISON_WIDTH, 9, image::Rgb([200, 10, 10]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn post(id: &str, bytes: Vec<u8>) -> NewPost {
    NewPost {
        source: "faults".into(),
        source_kind: "test".into(),
        external_id: id.into(),
        image: ImageSource::Bytes(bytes),
        caption: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_crashing_image_fails_alone() {
    let mut env = Env::postgres_rabbit("faults_model").await;
    // One batch for all five jobs.
    env.cfg.worker.batch_size = 8;
    env.cfg.worker.max_wait_ms = 1_000;
    env.cfg.queue.max_attempts = 3;
    let ing = Ingestor::new(env.store.clone(), env.queue.clone(), &env.cfg.fetch).unwrap();
    let mut good = Vec::new();
    for i in 0..4 {
        good.push(
            ing.ingest(&post(&format!("good{i}"), png(i)))
                .await
                .unwrap()
                .job_id
                .unwrap(),
        );
    }
    let bad = ing
        .ingest(&post("poison", poison_png()))
        .await
        .unwrap()
        .job_id
        .unwrap();
    let model = Arc::new(CrashesOnOneImage {
        calls: AtomicUsize::new(0),
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = Worker {
        store: env.store.clone(),
        queue: env.queue.clone(),
        cfg: env.cfg.clone(),
        model: model.clone(),
    };
    let task = tokio::spawn(worker.run(stop.clone()));
    wait_until(60, "every job finished", || async {
        jobs_in(&env.store, JobState::Done).await + jobs_in(&env.store, JobState::Failed).await == 5
    })
    .await;
    for id in good {
        let row = env.store.job(id).await.unwrap().unwrap();
        assert_eq!(row.state, JobState::Done, "job {id}: {:?}", row.last_error);
    }
    let row = env.store.job(bad).await.unwrap().unwrap();
    assert_eq!(row.state, JobState::Failed);
    assert_eq!(row.attempts, 1, "a model crash on one image is not retried");
    let reason = row.last_error.unwrap_or_default();
    assert!(reason.contains("fails on this image"), "{reason}");
    assert_eq!(env.store.count("results").await.unwrap(), 4);
    stop.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}
