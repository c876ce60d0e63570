//! The RabbitMQ topology: exchange and queue names, retry delays, their declaration, and
//! the reconnection backoff.

use std::collections::BTreeSet;
use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use tokio::time::Instant;

use hashtale_core::config::QueueConfig;
use hashtale_core::Result;

/// Exchange and queue names derived from the configured prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub jobs: String,
    /// Base of the retry queues' names (see [`Names::retry_queue`]).
    pub retry: String,
    pub dead: String,
    pub ingest: String,
    pub results: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Self {
            jobs: format!("{prefix}.jobs"),
            retry: format!("{prefix}.retry"),
            dead: format!("{prefix}.dead"),
            ingest: format!("{prefix}.ingest"),
            results: format!("{prefix}.results"),
        }
    }

    /// The retry queue holding jobs for `delay_ms`. The delay is in the name because a queue's
    /// TTL cannot change once declared: a new `retry_backoff_ms` gets new queues.
    pub fn retry_queue(&self, delay_ms: u64) -> String {
        format!("{}.{delay_ms}ms", self.retry)
    }
}

/// The backoff before retrying a job whose attempt number `attempts` (1-based) failed.
pub fn retry_delay_ms(cfg: &QueueConfig, attempts: i64) -> u64 {
    let shift = (attempts.max(1) - 1).min(16) as u32;
    cfg.retry_backoff_ms.max(1).saturating_mul(1u64 << shift)
}

/// Every backoff delay the configuration can produce (attempts 1 … max_attempts-1).
pub fn retry_delays(cfg: &QueueConfig) -> BTreeSet<u64> {
    (1..cfg.max_attempts as i64)
        .map(|a| retry_delay_ms(cfg, a))
        .collect()
}

fn dead_letter_to(queue: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(LongString::from("")),
    );
    args.insert(
        ShortString::from("x-dead-letter-routing-key"),
        AMQPValue::LongString(LongString::from(queue)),
    );
    args
}

/// Shortest wait between two attempts to reach the broker; it doubles after each failure.
pub const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Longest wait between two attempts to reach the broker.
pub const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Exponential backoff between reconnection attempts ([`RECONNECT_MIN`] … [`RECONNECT_MAX`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    delay: Duration,
    not_before: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            delay: RECONNECT_MIN,
            not_before: None,
        }
    }
}

impl Backoff {
    /// Records a failed attempt; returns how long to wait before the next one.
    pub fn failed(&mut self) -> Duration {
        let wait = self.delay;
        self.not_before = Some(Instant::now() + wait);
        self.delay = (self.delay * 2).min(RECONNECT_MAX);
        wait
    }

    /// Whether an attempt may start now.
    pub fn due(&self) -> bool {
        self.not_before.is_none_or(|t| Instant::now() >= t)
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Declares the fixed part of the topology (idempotent).
pub(crate) async fn declare_topology(ch: &Channel, names: &Names) -> Result<()> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(&names.dead, durable, FieldTable::default())
        .await?;
    ch.queue_declare(&names.jobs, durable, dead_letter_to(&names.dead))
        .await?;
    ch.queue_declare(&names.ingest, durable, dead_letter_to(&names.dead))
        .await?;
    ch.exchange_declare(
        &names.results,
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// Declares the retry queue of `delay_ms`: TTL `delay_ms`, dead-lettering back to `jobs`.
pub(crate) async fn declare_retry(ch: &Channel, names: &Names, delay_ms: u64) -> Result<String> {
    let name = names.retry_queue(delay_ms);
    let mut args = dead_letter_to(&names.jobs);
    args.insert(
        ShortString::from("x-message-ttl"),
        AMQPValue::LongLongInt(delay_ms.min(i64::MAX as u64) as i64),
    );
    ch.queue_declare(
        &name,
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reconnect_backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::default();
        assert!(b.due());
        assert_eq!(b.failed(), RECONNECT_MIN);
        // No attempt before the wait is over.
        assert!(!b.due());
        tokio::time::sleep(RECONNECT_MIN).await;
        assert!(b.due());
        let waits: Vec<Duration> = (0..8).map(|_| b.failed()).collect();
        assert_eq!(waits[0], RECONNECT_MIN * 2);
        assert!(waits.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*waits.last().unwrap(), RECONNECT_MAX);
        b.reset();
        assert_eq!(b.failed(), RECONNECT_MIN);
    }
}
