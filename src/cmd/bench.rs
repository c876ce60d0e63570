//! `hashtale bench`: pipeline overhead (jobs/s through the queue and the store, with the model
//! replaced by `NoopModelForOverheadBench`, a stand-in that costs nothing) and the real
//! models' images/s at several batch sizes. Not a test: prints figures.
use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use hashtale_core::config::QueueKind;
use hashtale_queue::JobQueue;
use hashtale_scheduler::Ingestor;
use hashtale_store::Store;
use hashtale_store::StoreOptions;
use hashtale_types::JobState;
use hashtale_types::{ImageSource, NewPost};
use hashtale_worker::{ModelStep, NoopModelForOverheadBench, Worker};

use super::config::{runtime, PipelineArgs};

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Jobs/s through queue + store + fetch/decode, model step replaced by a zero-cost stand-in.
    Pipeline(PipelineBenchArgs),
    /// Images/s of the real models at several batch sizes.
    Model(ModelBenchArgs),
    /// Images/s of each encoder with its concept hashtags (resize + encoder + ImageNet head),
    /// measured in the same run, and their ratio.
    Encoders(EncoderBenchArgs),
    /// Each stage on its own (decode, encoder, stories on both story engines, the whole model
    /// step, tags only), one JSON object: what `scripts/bench_compare.sh` divides by PyTorch's.
    Stages(StagesBenchArgs),
}

#[derive(Args)]
pub struct StagesBenchArgs {
    /// Images through the decode and encoder stages.
    #[arg(long, default_value_t = 64)]
    pub images: usize,
    /// Characters per story.
    #[arg(long, default_value_t = 500)]
    pub chars: usize,
    /// Batches timed per whole-model-step figure.
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
}

#[derive(Args)]
pub struct EncoderBenchArgs {
    /// Images per batch.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Batches timed per encoder (after one warm-up batch).
    #[arg(long, default_value_t = 4)]
    pub iters: usize,
}

#[derive(Args)]
pub struct PipelineBenchArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Jobs to push through.
    #[arg(long, default_value_t = 5000)]
    pub jobs: usize,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 5)]
    pub max_wait_ms: u64,
}

#[derive(Args)]
pub struct ModelBenchArgs {
    /// Comma-separated batch sizes.
    #[arg(long, default_value = "1,8,32")]
    pub batch_sizes: String,
    /// Batches timed per size (after one warm-up batch).
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    /// Hashtag model directory (its encoder comes with it: `assets/tags-lite2` times Lite2).
    #[arg(long)]
    pub tag_model: Option<std::path::PathBuf>,
    /// Time the hashtags only (no story).
    #[arg(long)]
    pub no_story: bool,
}

pub fn run(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Pipeline(a) => runtime()?.block_on(bench_pipeline(a)),
        BenchCmd::Model(a) => bench_model(a),
        BenchCmd::Encoders(a) => bench_encoders(a),
        BenchCmd::Stages(a) => bench_stages(a),
    }
}

fn tiny_png() -> Vec<u8> {
    let img =
        image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8 * 16, y as u8 * 16, 128]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encoding a PNG in memory");
    out.into_inner()
}

async fn bench_pipeline(a: PipelineBenchArgs) -> Result<()> {
    let mut cfg = a.pipeline.load()?;
    if a.pipeline.database_url.is_none() && std::env::var("HASHTALE__DATABASE__URL").is_err() {
        cfg.database.url = "postgres://postgres@127.0.0.1:5432/test".into();
    }
    cfg.worker.batch_size = a.batch_size.max(1);
    cfg.worker.max_wait_ms = a.max_wait_ms;
    let tag = format!(
        "hashtale_bench_{}_{}",
        std::process::id(),
        hashtale_types::now_ms()
    );
    cfg.queue.prefix = tag.clone();
    let tmp = tempfile_dir()?;
    if cfg.database.url.starts_with("sqlite:") {
        cfg.database.url = format!("sqlite://{}", tmp.join("bench.db").display());
    }
    let schema = cfg
        .database
        .url
        .starts_with("postgres")
        .then(|| tag.clone());
    let store = Store::connect(
        &cfg.database.url,
        &StoreOptions {
            max_connections: 16,
            pg_schema: schema.clone(),
        },
    )
    .await?;
    store.migrate().await?;
    let queue = JobQueue::connect(&cfg.queue, &store).await?;
    let ing = Ingestor::new(store.clone(), queue.clone(), &cfg.fetch)?;
    let png = tiny_png();
    println!(
        "pipeline overhead bench: {} jobs, {} store, {:?} queue, batch_size {}, model = NoopModelForOverheadBench (zero-cost stand-in)",
        a.jobs,
        store.backend(),
        cfg.queue.kind,
        cfg.worker.batch_size
    );

    // 1. Ingest: posts + jobs committed, messages published with confirms.
    let t0 = Instant::now();
    let posts: Vec<NewPost> = (0..a.jobs)
        .map(|i| NewPost {
            source: "bench".into(),
            source_kind: "bench".into(),
            external_id: format!("post-{i}"),
            image: ImageSource::Bytes(png.clone()),
            caption: None,
        })
        .collect();
    for chunk in posts.chunks(500) {
        ing.ingest_many(chunk).await?;
    }
    let ingest_s = t0.elapsed().as_secs_f64();
    println!(
        "ingest:  {} posts in {ingest_s:.2} s = {:.0} posts/s",
        a.jobs,
        a.jobs as f64 / ingest_s
    );

    // 2. Drain: the worker with the stand-in model.
    let stop = tokio_util::sync::CancellationToken::new();
    let model: Arc<dyn ModelStep> = Arc::new(NoopModelForOverheadBench);
    let t1 = Instant::now();
    let worker = tokio::spawn(
        Worker {
            store: store.clone(),
            queue: queue.clone(),
            cfg: cfg.clone(),
            model,
        }
        .run(stop.clone()),
    );
    // Watch the worker's own success counter (same process) rather than polling the jobs
    // table: a `GROUP BY` over every job 50 times a second cost the store a good share of the
    // CPU being measured. The database is checked once at the end.
    let succeeded = hashtale_core::metrics::succeeded_so_far;
    let before = succeeded();
    let deadline = Instant::now() + Duration::from_secs(600);
    while ((succeeded() - before) as usize) < a.jobs {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} jobs done after 600 s",
                succeeded() - before,
                a.jobs
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let drain_s = t1.elapsed().as_secs_f64();
    let done = store
        .job_counts()
        .await?
        .into_iter()
        .find(|(s, _)| *s == JobState::Done)
        .map_or(0, |(_, n)| n);
    if done as usize != a.jobs {
        bail!(
            "the worker counted {} jobs, the store has {done} done",
            a.jobs
        );
    }
    stop.cancel();
    worker.await??;
    let results = store.count("results").await?;
    println!(
        "worker:  {} jobs in {drain_s:.2} s = {:.0} jobs/s (fetch/decode + batch + commit + result publish + ack); {results} results",
        a.jobs,
        a.jobs as f64 / drain_s
    );
    println!(
        "overall: {:.0} jobs/s end to end",
        a.jobs as f64 / (ingest_s + drain_s)
    );
    if let Some(r) = queue.rabbit() {
        r.delete_topology().await?;
        r.close().await;
    }
    if let Some(s) = schema {
        store.drop_pg_schema(&s).await?;
    }
    store.close().await;
    let _ = std::fs::remove_dir_all(&tmp);
    if cfg.queue.kind == QueueKind::Rabbitmq && results as usize != a.jobs {
        bail!("expected {} results, found {results}", a.jobs);
    }
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("hashtale-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn bench_model(a: ModelBenchArgs) -> Result<()> {
    let sizes: Vec<usize> = a
        .batch_sizes
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let cfg = super::models::offline_config()?;
    let mut paths = super::models::resolve(&cfg.models);
    if let Some(dir) = &a.tag_model {
        paths.tag_model = dir.clone();
    }
    let mut model = hashtale_models::pipeline::Hashtale::load_all(&paths)?;
    if a.no_story {
        model.options.story = None;
    }
    let files = sample_files(&super::models::samples_dir(&cfg.models))?;
    let limits = cfg.fetch.decode_limits();
    println!(
        "model bench: {} ({} sample files, cycled; each step decodes, resizes and runs the models)",
        model.model_version(),
        files.len()
    );
    // One step as the worker runs it: the files decoded and brought to the input size in
    // parallel (the worker's decode tasks), then the batch through every model.
    for &bs in &sizes {
        run_model_steps(&model, &files, &limits, bs, 1)?; // warm-up
        let t = Instant::now();
        run_model_steps(&model, &files, &limits, bs, a.iters)?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "batch {bs:>3}: {:.2} images/s ({:.1} ms per batch)",
            (bs * a.iters) as f64 / s,
            s * 1e3 / a.iters as f64
        );
    }
    Ok(())
}

/// The shipped sample files' bytes.
fn sample_files(dir: &std::path::Path) -> Result<Vec<Vec<u8>>> {
    let files: Vec<Vec<u8>> = hashtale_scheduler::dir::scan(dir)?
        .iter()
        .map(std::fs::read)
        .collect::<Result<_, _>>()?;
    if files.is_empty() {
        bail!("no sample images in {}", dir.display());
    }
    Ok(files)
}

/// The shipped sample photos, decoded at full size: the benchmarks' inputs.
fn sample_images(dir: &std::path::Path) -> Result<Vec<image::DynamicImage>> {
    let samples: Vec<image::DynamicImage> = hashtale_scheduler::dir::scan(dir)?
        .iter()
        .map(image::open)
        .collect::<Result<_, _>>()?;
    if samples.is_empty() {
        bail!("no sample images in {}", dir.display());
    }
    Ok(samples)
}

fn bench_encoders(a: EncoderBenchArgs) -> Result<()> {
    use hashtale_models::encoder::{load_encoder, ImageEncoder, LiteVariant};
    use hashtale_models::tags::concepts::{ConceptOptions, ConceptTable, ConceptTagger};
    let device = hashtale_models::device::best_device();
    let cfg = super::models::offline_config()?;
    let paths = super::models::resolve(&cfg.models);
    let samples = sample_images(&super::models::samples_dir(&cfg.models))?;
    let batch: Vec<image::DynamicImage> = (0..a.batch_size.max(1))
        .map(|i| samples[i % samples.len()].clone())
        .collect();
    let table = ConceptTable::load(&paths.concepts)?;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    println!(
        "encoder bench: batch {}, {} batches each, threads {threads} (full-size sample photos, resized in the step)",
        batch.len(),
        a.iters
    );
    let mut rates = Vec::new();
    for variant in [LiteVariant::Lite0, LiteVariant::Lite2] {
        let encoder = load_encoder(variant, &paths, &device)?;
        let (w, b) = encoder.classifier_parts();
        let tagger = ConceptTagger::new(table.clone(), w, b)?;
        let step = || -> Result<()> {
            let enc = encoder.encode_images(&batch)?;
            tagger.tag(&enc, ConceptOptions::default())?;
            Ok(())
        };
        step()?; // warm-up
        let t = Instant::now();
        for _ in 0..a.iters {
            step()?;
        }
        let rate = (batch.len() * a.iters) as f64 / t.elapsed().as_secs_f64();
        println!("{:>20}: {rate:.2} images/s", encoder.name());
        rates.push(rate);
    }
    println!("lite2 / lite0: {:.2}×", rates[1] / rates[0]);
    Ok(())
}

/// `iters` whole model steps of `bs` sample files (decoded in parallel, then the models).
fn run_model_steps(
    model: &hashtale_models::pipeline::Hashtale,
    files: &[Vec<u8>],
    limits: &hashtale_fetch::DecodeLimits,
    bs: usize,
    iters: usize,
) -> Result<()> {
    use rayon::prelude::*;
    let batch: Vec<&Vec<u8>> = (0..bs).map(|i| &files[i % files.len()]).collect();
    for _ in 0..iters {
        let inputs = batch
            .par_iter()
            .map(|bytes| {
                let img = hashtale_fetch::decode_image(bytes, limits)?;
                Ok(hashtale_models::pipeline::ModelInput::new(
                    model.prepare(img),
                    bytes,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        model.run_batch(&inputs)?;
    }
    Ok(())
}

/// Rate of `count` items done by `f`, after one untimed warm-up call.
fn rate(count: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let t = Instant::now();
    f()?;
    Ok(count as f64 / t.elapsed().as_secs_f64())
}

fn bench_stages(a: StagesBenchArgs) -> Result<()> {
    use hashtale_models::encoder::{load_encoder, ImageEncoder, LiteVariant};
    use hashtale_models::story::{GenerateOptions, StoryModel};
    let cfg = super::models::offline_config()?;
    let paths = super::models::resolve(&cfg.models);
    let files = sample_files(&super::models::samples_dir(&cfg.models))?;
    let limits = cfg.fetch.decode_limits();
    let device = hashtale_models::device::best_device();
    let n = a.images.max(8);
    let encoder = load_encoder(LiteVariant::Lite0, &paths, &device)?;
    let size = encoder.input_size();
    let decode = |bytes: &[u8]| -> Result<image::DynamicImage> {
        let img = hashtale_fetch::decode_image(bytes, &limits)?;
        Ok(hashtale_models::image_prep::to_input(img, size))
    };
    let mut out = serde_json::Map::new();
    let threads = rayon::current_num_threads();
    out.insert("engine".into(), "hashtale".into());
    out.insert("threads".into(), threads.into());
    // Decode and squash one file after another, as the reference does.
    let decode_rate = rate(n, || {
        for i in 0..n {
            decode(&files[i % files.len()])?;
        }
        Ok(())
    })?;
    out.insert("decode_images_per_s".into(), decode_rate.into());
    let encoder_rate = rate(n, || {
        for start in (0..n).step_by(8) {
            let batch = (start..start + 8)
                .map(|i| decode(&files[i % files.len()]))
                .collect::<Result<Vec<_>>>()?;
            encoder.encode_images(&batch)?;
        }
        Ok(())
    })?;
    out.insert("encoder_images_per_s".into(), encoder_rate.into());
    // The plain char-LSTM (the reference's nn.LSTM shapes), on the host engine and on the
    // tensor step it replaces; 500 characters each, no early stop.
    let plain_dir = super::models::plain_story_model(&cfg.models);
    let host = StoryModel::load(&plain_dir, &device)?;
    let tensor = StoryModel::load(&plain_dir, &device)?.with_tensor_engine();
    let opts = GenerateOptions {
        max_chars: a.chars,
        ..GenerateOptions::default()
    };
    for (name, model) in [("", &host), ("_tensor", &tensor)] {
        for batch in [8usize, 64] {
            let seeds = vec![String::new(); batch];
            let r = rate(batch * a.chars, || {
                model.generate_batch(&seeds, &opts)?;
                Ok(())
            })?;
            out.insert(format!("story_b{batch}{name}_chars_per_s"), r.into());
        }
    }
    // The whole model step (decode in parallel, as the worker's decode tasks do).
    let mut model = hashtale_models::pipeline::Hashtale::load_all(&paths)?;
    let step_rate = |model: &hashtale_models::pipeline::Hashtale, bs: usize| -> Result<f64> {
        rate(bs * a.iters, || {
            run_model_steps(model, &files, &limits, bs, a.iters)
        })
    };
    out.insert("model_b8_images_per_s".into(), step_rate(&model, 8)?.into());
    out.insert("model_b1_images_per_s".into(), step_rate(&model, 1)?.into());
    // As the worker runs it: 4 batches of 8 in the model at once (worker.batches_in_flight),
    // their stories sharing the story engine's steps.
    let in_flight = 4;
    let pooled = rate(in_flight * 8 * a.iters, || {
        std::thread::scope(|scope| {
            let runs: Vec<_> = (0..in_flight)
                .map(|_| scope.spawn(|| run_model_steps(&model, &files, &limits, 8, a.iters)))
                .collect();
            runs.into_iter()
                .try_for_each(|r| r.join().expect("a bench thread panicked"))
        })
    })?;
    out.insert("model_b8_x4_images_per_s".into(), pooled.into());
    model.options.story = None;
    out.insert("tags_b8_images_per_s".into(), step_rate(&model, 8)?.into());
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
