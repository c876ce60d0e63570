//! Process-wide Prometheus metrics, rendered in the text exposition format by `/metrics`.
//! Hand-rolled (a few atomics) to keep the hot path free of locks and dependencies.
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// A histogram with fixed upper bounds.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if v <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add((v * 1e6).max(0.0) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {n}");
    }
}

/// Counters and histograms updated by the worker and the scheduler.
pub struct Metrics {
    pub jobs_succeeded: AtomicU64,
    pub jobs_failed: AtomicU64,
    pub jobs_retried: AtomicU64,
    pub posts_ingested: AtomicU64,
    pub batch_size: Histogram,
    pub model_seconds: Histogram,
}

static GLOBAL: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics.
pub fn global() -> &'static Metrics {
    GLOBAL.get_or_init(|| Metrics {
        jobs_succeeded: AtomicU64::new(0),
        jobs_failed: AtomicU64::new(0),
        jobs_retried: AtomicU64::new(0),
        posts_ingested: AtomicU64::new(0),
        batch_size: Histogram::new(&[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        model_seconds: Histogram::new(&[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
    })
}

impl Metrics {
    /// Prometheus text; `jobs_by_state` and `queue_depth` come from the store and broker.
    pub fn render(&self, jobs_by_state: &[(String, i64)], queue_depth: Option<u64>) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP hashtale_jobs Jobs in the store by state.\n# TYPE hashtale_jobs gauge\n",
        );
        for (s, n) in jobs_by_state {
            let _ = writeln!(out, "hashtale_jobs{{state=\"{s}\"}} {n}");
        }
        if let Some(d) = queue_depth {
            let _ = writeln!(
                out,
                "# HELP hashtale_queue_depth Jobs waiting in the queue.\n# TYPE hashtale_queue_depth gauge\nhashtale_queue_depth {d}"
            );
        }
        for (name, help, v) in [
            (
                "hashtale_jobs_succeeded_total",
                "Jobs completed by this process.",
                &self.jobs_succeeded,
            ),
            (
                "hashtale_jobs_failed_total",
                "Jobs failed for good by this process.",
                &self.jobs_failed,
            ),
            (
                "hashtale_jobs_retried_total",
                "Failed attempts sent back for a retry.",
                &self.jobs_retried,
            ),
            (
                "hashtale_posts_ingested_total",
                "New posts ingested by this process.",
                &self.posts_ingested,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        self.batch_size
            .render(&mut out, "hashtale_batch_size", "Images per model batch.");
        self.model_seconds.render(
            &mut out,
            "hashtale_model_seconds",
            "Model time per batch, in seconds.",
        );
        out
    }
}

/// Adds one to a counter.
pub fn inc(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
