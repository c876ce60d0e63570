//! Process-wide Prometheus metrics: recorded through the `metrics` facade and rendered in the
//! text exposition format by `metrics-exporter-prometheus`. Every long-running command serves
//! them on its own port (`metrics.listen`), `serve` and `run` also on the API's `/metrics`.
//!
//! [`install`] sets the process's recorder; call it at start, before anything is counted
//! (what is recorded before goes nowhere). It is idempotent.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use hashtale_types::JobState;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const JOBS_SUCCEEDED: &str = "hashtale_jobs_succeeded_total";
pub const JOBS_FAILED: &str = "hashtale_jobs_failed_total";
pub const JOBS_RETRIED: &str = "hashtale_jobs_retried_total";
pub const POSTS_INGESTED: &str = "hashtale_posts_ingested_total";
pub const BATCH_SIZE: &str = "hashtale_batch_size";
pub const MODEL_SECONDS: &str = "hashtale_model_seconds";
pub const JOBS: &str = "hashtale_jobs";
pub const QUEUE_DEPTH: &str = "hashtale_queue_depth";

const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
const MODEL_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
/// Jobs succeeded in this process, readable in-process (the pipeline bench times on it).
static SUCCEEDED: AtomicU64 = AtomicU64::new(0);

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(MODEL_SECONDS.into()), MODEL_BUCKETS)
            })
            .expect("histogram buckets are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will be empty");
        }
        describe_counter!(JOBS_SUCCEEDED, "Jobs completed by this process.");
        describe_counter!(JOBS_FAILED, "Jobs failed for good by this process.");
        describe_counter!(JOBS_RETRIED, "Failed attempts sent back for a retry.");
        describe_counter!(POSTS_INGESTED, "New posts ingested by this process.");
        describe_histogram!(BATCH_SIZE, "Images per model batch.");
        describe_histogram!(MODEL_SECONDS, "Model time per batch, in seconds.");
        describe_gauge!(JOBS, "Jobs in the store by state.");
        describe_gauge!(QUEUE_DEPTH, "Jobs waiting in the queue.");
        // Counters are shown from the start (at 0), not only once something happened.
        for c in [JOBS_SUCCEEDED, JOBS_FAILED, JOBS_RETRIED, POSTS_INGESTED] {
            counter!(c).increment(0);
        }
        handle
    })
}

pub fn jobs_succeeded(n: u64) {
    SUCCEEDED.fetch_add(n, Ordering::Relaxed);
    counter!(JOBS_SUCCEEDED).increment(n);
}

pub fn jobs_failed(n: u64) {
    counter!(JOBS_FAILED).increment(n);
}

pub fn jobs_retried(n: u64) {
    counter!(JOBS_RETRIED).increment(n);
}

pub fn posts_ingested(n: u64) {
    counter!(POSTS_INGESTED).increment(n);
}

pub fn batch_size(n: usize) {
    histogram!(BATCH_SIZE).record(n as f64);
}

pub fn model_seconds(s: f64) {
    histogram!(MODEL_SECONDS).record(s);
}

/// Jobs this process completed so far.
pub fn succeeded_so_far() -> u64 {
    SUCCEEDED.load(Ordering::Relaxed)
}

/// The Prometheus text. `jobs_by_state` and `queue_depth` (from the store and broker, given by
/// the API) are set as gauges first.
pub fn render(jobs_by_state: Option<&[(JobState, i64)]>, queue_depth: Option<u64>) -> String {
    let handle = install();
    for (s, n) in jobs_by_state.unwrap_or_default() {
        gauge!(JOBS, "state" => s.as_str()).set(*n as f64);
    }
    if let Some(d) = queue_depth {
        gauge!(QUEUE_DEPTH).set(d as f64);
    }
    handle.render()
}

#[cfg(test)]
mod tests {
    use hashtale_types::JobState;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        super::install();
        super::jobs_succeeded(3);
        super::batch_size(5);
        let text = super::render(Some(&[(JobState::Done, 7)]), Some(2));
        assert!(
            text.contains("# TYPE hashtale_jobs_succeeded_total counter"),
            "{text}"
        );
        assert!(text.contains("hashtale_jobs_succeeded_total 3"), "{text}");
        assert!(text.contains("hashtale_jobs_failed_total 0"), "{text}");
        assert!(
            text.contains("hashtale_batch_size_bucket{le=\"8\"} 1"),
            "{text}"
        );
        assert!(text.contains("hashtale_jobs{state=\"done\"} 7"), "{text}");
        assert!(text.contains("hashtale_queue_depth 2"), "{text}");
    }
}
