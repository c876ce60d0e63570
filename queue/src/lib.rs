//! Job queues: RabbitMQ (production) and an in-process queue backed by the jobs table
//! (embedded mode). The worker sees one interface, [`JobQueue`] / [`JobConsumer`].
//!
//! RabbitMQ topology for prefix `p` (all durable, messages persistent, publisher confirms):
//! - `p.jobs`: work queue; messages it rejects go to `p.dead`.
//! - `p.retry.{delay}ms`: one queue per backoff delay (`retry_backoff_ms × 2^(attempt-1)` for
//!   attempts 1 … max_attempts-1), each with a queue-level TTL of its delay, dead-lettering
//!   back to `p.jobs`. One delay per queue means every message at a queue's head is the next
//!   to expire, so a long backoff never holds back a shorter one (RabbitMQ expires messages
//!   only at the head of a queue).
//! - `p.dead`: parked jobs, with the error in header `x-error`.
//! - `p.ingest`: JSON posts for the scheduler.
//! - `p.results`: fanout exchange, one message per committed result.
//!
//! A delivery is acknowledged only after its outcome (result or failure) is committed, so a
//! worker that dies mid-batch loses nothing: the broker redelivers.
//!
//! The broker may go away (a restart, a network cut). [`Rabbit`] then reconnects with
//! exponential backoff and declares the topology again; its consumers ([`RabbitConsumer`])
//! subscribe again. A job whose message could not be published stays `pending` in the store and
//! is published by [`JobQueue::maintain`] once the broker is back; a delivery whose ack was lost
//! with the connection comes again and finds its job done. Nothing is lost, and results are
//! unique per (post, model version), so no post gets a second result.
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Notify;
use tokio::time::Instant;

use hashtale_core::config::QueueConfig;
use hashtale_core::{Error, Result};
use hashtale_store::Store;
use hashtale_types::{now_ms, JobMessage, JobState, ResultMessage};

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

fn persistent_json() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
}

/// Shortest wait between two attempts to reach the broker; it doubles after each failure.
pub const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Longest wait between two attempts to reach the broker.
pub const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// A connection (TCP, AMQP handshake, topology) taking longer than this counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A broker that takes messages but does not confirm them within this is treated as down
/// (the messages' rows stay `pending` and are published again).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection to the broker and its confirming publisher channel.
struct Link {
    conn: Arc<Connection>,
    publisher: Channel,
}

impl Link {
    fn healthy(&self) -> bool {
        self.conn.status().connected() && self.publisher.status().connected()
    }
}

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

/// A RabbitMQ connection with a confirming publisher channel. Cheap to share (`Arc`).
///
/// It survives the broker going away: an operation that finds the connection lost opens a new
/// one (declaring the topology again, retry queues included) and goes on. Attempts are spaced
/// by [`Backoff`]; between them operations fail at once with a transient error rather than
/// wait, so an API request is never held up by a broker that is down. [`Rabbit::is_connected`]
/// is false until a reconnect succeeds.
pub struct Rabbit {
    url: String,
    pub names: Names,
    /// The current connection (`None` after a failed reconnect).
    link: Mutex<Option<Arc<Link>>>,
    /// One reconnection attempt at a time, spaced by the backoff (a tokio mutex: it is held
    /// across the attempt).
    reconnect: tokio::sync::Mutex<Backoff>,
    /// Delays whose retry queue is declared (again on every new connection).
    retry_queues: Mutex<BTreeSet<u64>>,
    /// Connections opened so far: a change tells that the broker came back.
    connects: AtomicU64,
    /// Set by [`Rabbit::close`]: no reconnecting after that.
    closed: AtomicBool,
}

/// Declares the fixed part of the topology (idempotent).
async fn declare_topology(ch: &Channel, names: &Names) -> Result<()> {
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
async fn declare_retry(ch: &Channel, names: &Names, delay_ms: u64) -> Result<String> {
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

/// Waits for publisher confirms, at most [`CONFIRM_TIMEOUT`].
async fn confirmed<F, T>(what: &str, f: F) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    tokio::time::timeout(CONFIRM_TIMEOUT, f)
        .await
        .map_err(|_| {
            Error::Transient(format!(
                "broker did not confirm {what} within {CONFIRM_TIMEOUT:?}"
            ))
        })?
}

impl Rabbit {
    /// Connects and declares the whole topology (idempotent). Fails if the broker cannot be
    /// reached now; once connected, connection losses are repaired as they are found.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        let r = Self {
            url: url.to_string(),
            names: Names::new(prefix),
            link: Mutex::new(None),
            reconnect: tokio::sync::Mutex::new(Backoff::default()),
            retry_queues: Mutex::new(BTreeSet::new()),
            connects: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        };
        let link = r.open(None).await?;
        *r.link.lock().expect("lock") = Some(Arc::new(link));
        r.connects.store(1, Ordering::SeqCst);
        Ok(r)
    }

    /// Connects and also declares the retry queue of every delay `cfg` can produce.
    pub async fn connect_with(cfg: &QueueConfig) -> Result<Self> {
        let r = Self::connect(&cfg.amqp_url, &cfg.prefix).await?;
        for delay in retry_delays(cfg) {
            r.declare_retry_queue(delay).await?;
        }
        Ok(r)
    }

    /// Opens a publisher channel (on `conn` when it is still up, else on a new connection) and
    /// declares the topology on it.
    async fn open(&self, conn: Option<Arc<Connection>>) -> Result<Link> {
        let open = async {
            let conn = match conn {
                Some(c) if c.status().connected() => c,
                _ => {
                    Arc::new(Connection::connect(&self.url, ConnectionProperties::default()).await?)
                }
            };
            let publisher = conn.create_channel().await?;
            publisher
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            declare_topology(&publisher, &self.names).await?;
            let delays: Vec<u64> = self
                .retry_queues
                .lock()
                .expect("lock")
                .iter()
                .copied()
                .collect();
            for d in delays {
                declare_retry(&publisher, &self.names, d).await?;
            }
            Ok::<_, Error>(Link { conn, publisher })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, open)
            .await
            .map_err(|_| {
                Error::Transient(format!("broker: no connection within {CONNECT_TIMEOUT:?}"))
            })?
    }

    /// The current link when it is healthy.
    fn current(&self) -> Option<Arc<Link>> {
        self.link
            .lock()
            .expect("lock")
            .as_ref()
            .filter(|l| l.healthy())
            .cloned()
    }

    /// A healthy link: the current one, or a new one when the backoff allows an attempt now.
    async fn link(&self) -> Result<Arc<Link>> {
        if let Some(l) = self.current() {
            return Ok(l);
        }
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Transient("broker connection closed".into()));
        }
        // One attempt at a time; the other callers fail at once rather than wait for it.
        let Ok(mut backoff) = self.reconnect.try_lock() else {
            return Err(Error::Transient("broker unreachable (reconnecting)".into()));
        };
        // Someone else may have reconnected meanwhile.
        if let Some(l) = self.current() {
            return Ok(l);
        }
        if !backoff.due() {
            return Err(Error::Transient(
                "broker unreachable (reconnecting with backoff)".into(),
            ));
        }
        let old = self.link.lock().expect("lock").take();
        if old.is_some() {
            tracing::warn!("broker: connection lost; reconnecting");
        }
        match self.open(old.map(|l| l.conn.clone())).await {
            Ok(l) => {
                let l = Arc::new(l);
                *self.link.lock().expect("lock") = Some(l.clone());
                backoff.reset();
                self.connects.fetch_add(1, Ordering::SeqCst);
                tracing::info!("broker: reconnected");
                Ok(l)
            }
            Err(e) => {
                let wait = backoff.failed();
                tracing::warn!("broker: reconnecting failed ({e}); next attempt in {wait:?}");
                Err(e)
            }
        }
    }

    /// Makes sure the connection is up, attempting a reconnect if the backoff allows one now.
    pub async fn ensure(&self) -> Result<()> {
        self.link().await.map(|_| ())
    }

    /// How many connections were opened so far (it grows on every reconnect).
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::SeqCst)
    }

    /// Declares the retry queue for `delay_ms` (once; again on every new connection).
    pub async fn declare_retry_queue(&self, delay_ms: u64) -> Result<String> {
        let name = self.names.retry_queue(delay_ms);
        if self.retry_queues.lock().expect("lock").contains(&delay_ms) {
            return Ok(name);
        }
        let link = self.link().await?;
        declare_retry(&link.publisher, &self.names, delay_ms).await?;
        self.retry_queues.lock().expect("lock").insert(delay_ms);
        Ok(name)
    }

    /// Publishes `body` to queue `queue` (default exchange) and waits for the broker's confirm.
    pub async fn publish(&self, queue: &str, body: &[u8], props: BasicProperties) -> Result<()> {
        let link = self.link().await?;
        let pending = link
            .publisher
            .basic_publish("", queue, BasicPublishOptions::default(), body, props)
            .await?;
        let confirm = confirmed("a message", async { Ok(pending.await?) }).await?;
        if confirm.is_nack() {
            return Err(Error::Transient(format!(
                "broker refused a message for {queue}"
            )));
        }
        Ok(())
    }

    /// Publishes job messages, all confirmed before returning.
    pub async fn publish_jobs(&self, jobs: &[JobMessage]) -> Result<()> {
        self.publish_all_confirmed("", &self.names.jobs, jobs, "job")
            .await
    }

    /// Puts a job in the retry queue of `delay_ms`; it comes back to `jobs` after that delay.
    pub async fn publish_retry(&self, job: &JobMessage, delay_ms: u64, error: &str) -> Result<()> {
        let queue = self.declare_retry_queue(delay_ms).await?;
        let props = persistent_json().with_headers(error_headers(error));
        self.publish(&queue, &serde_json::to_vec(job)?, props).await
    }

    /// Parks a job in the dead-letter queue with its error.
    pub async fn publish_dead(&self, job: &JobMessage, error: &str) -> Result<()> {
        let props = persistent_json().with_headers(error_headers(error));
        self.publish(&self.names.dead, &serde_json::to_vec(job)?, props)
            .await
    }

    /// Announces committed results on the `results` exchange.
    pub async fn publish_results(&self, results: &[ResultMessage]) -> Result<()> {
        self.publish_all_confirmed(&self.names.results, "", results, "result")
            .await
    }

    /// Publishes every message as persistent JSON, then waits for all the broker's confirms
    /// (pipelined: one round trip for the lot, not one per message).
    async fn publish_all_confirmed<T: serde::Serialize>(
        &self,
        exchange: &str,
        routing_key: &str,
        messages: &[T],
        what: &str,
    ) -> Result<()> {
        let link = self.link().await?;
        let mut confirms = Vec::with_capacity(messages.len());
        for m in messages {
            let body = serde_json::to_vec(m)?;
            confirms.push(
                link.publisher
                    .basic_publish(
                        exchange,
                        routing_key,
                        BasicPublishOptions::default(),
                        &body,
                        persistent_json(),
                    )
                    .await?,
            );
        }
        confirmed(&format!("{} {what} messages", messages.len()), async {
            for c in confirms {
                if c.await?.is_nack() {
                    return Err(Error::Transient(format!("broker refused a {what} message")));
                }
            }
            Ok(())
        })
        .await
    }

    /// A consumer of `queue` on its own channel, with `prefetch` unacknowledged messages.
    /// Closing the channel hands every unacknowledged message back to the broker. The channel
    /// dies with the connection: [`Rabbit::consumer`] gives one that subscribes again.
    pub async fn consume(&self, queue: &str, prefetch: u16) -> Result<(Channel, lapin::Consumer)> {
        let link = self.link().await?;
        let ch = link.conn.create_channel().await?;
        ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let consumer = ch
            .basic_consume(
                queue,
                "",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((ch, consumer))
    }

    /// A consumer of `queue` that subscribes again whenever its channel or the connection is
    /// lost (see [`RabbitConsumer`]). Subscribes now, so an error at start is reported.
    pub async fn consumer(self: &Arc<Self>, queue: &str, prefetch: u16) -> Result<RabbitConsumer> {
        let first = Subscription::open(self, queue, prefetch).await?;
        Ok(RabbitConsumer {
            rabbit: self.clone(),
            queue: queue.to_string(),
            prefetch,
            current: Some(first),
            resubscribe: None,
            closed: false,
        })
    }

    /// Declares an exclusive, auto-deleted queue bound to the results exchange (tests, tools).
    pub async fn subscribe_results(&self) -> Result<lapin::Consumer> {
        let link = self.link().await?;
        let ch = link.conn.create_channel().await?;
        let q = ch
            .queue_declare(
                "",
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        ch.queue_bind(
            q.name().as_str(),
            &self.names.results,
            "",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        Ok(ch
            .basic_consume(
                q.name().as_str(),
                "",
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?)
    }

    /// Messages ready in `queue` (for `/metrics` and tests).
    pub async fn depth(&self, queue: &str) -> Result<u32> {
        let link = self.link().await?;
        let ch = link.conn.create_channel().await?;
        let q = ch
            .queue_declare(
                queue,
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let _ = ch.close(200, "ok").await;
        Ok(q.message_count())
    }

    /// Empties a queue (bench set-up).
    pub async fn purge(&self, queue: &str) -> Result<u32> {
        let link = self.link().await?;
        Ok(link
            .publisher
            .queue_purge(queue, QueuePurgeOptions::default())
            .await?)
    }

    /// Deletes every queue and the exchange of this prefix (test clean-up), the retry queues
    /// this connection declared included.
    pub async fn delete_topology(&self) -> Result<()> {
        let link = self.link().await?;
        let retry: Vec<String> = self
            .retry_queues
            .lock()
            .expect("lock")
            .iter()
            .map(|d| self.names.retry_queue(*d))
            .collect();
        // `p.retry` is the single retry queue of earlier versions.
        for q in [
            &self.names.jobs,
            &self.names.retry,
            &self.names.dead,
            &self.names.ingest,
        ]
        .into_iter()
        .chain(&retry)
        {
            link.publisher
                .queue_delete(q, QueueDeleteOptions::default())
                .await?;
        }
        link.publisher
            .exchange_delete(&self.names.results, Default::default())
            .await?;
        Ok(())
    }

    /// Whether the connection is up now (no reconnect is attempted: see [`Rabbit::ensure`]).
    pub fn is_connected(&self) -> bool {
        self.current().is_some()
    }

    /// Closes the connection for good (no reconnecting after this).
    pub async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let link = self.link.lock().expect("lock").take();
        if let Some(l) = link {
            let _ = l.conn.close(200, "bye").await;
        }
    }
}

/// One subscription: a consumer on its own channel. Its id tells its deliveries' tags apart
/// from another channel's (tags restart at 1 on every channel).
struct Subscription {
    id: u64,
    channel: Channel,
    consumer: lapin::Consumer,
}

impl Subscription {
    async fn open(rabbit: &Rabbit, queue: &str, prefetch: u16) -> Result<Self> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let (channel, consumer) = rabbit.consume(queue, prefetch).await?;
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            channel,
            consumer,
        })
    }

    /// Subscribes, retrying with backoff until it works; `None` once the connection is closed
    /// for good.
    async fn open_until_done(rabbit: Arc<Rabbit>, queue: String, prefetch: u16) -> Option<Self> {
        let mut backoff = Backoff::default();
        loop {
            if rabbit.closed.load(Ordering::SeqCst) {
                return None;
            }
            match Subscription::open(&rabbit, &queue, prefetch).await {
                Ok(s) => {
                    tracing::info!("broker: consuming {queue} again");
                    return Some(s);
                }
                Err(e) => {
                    let wait = backoff.failed();
                    tracing::debug!("subscribing to {queue}: {e}; again in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// A delivery as a [`RabbitConsumer`] hands it out, with the id of the subscription it came on.
pub struct RawDelivery {
    pub delivery: lapin::message::Delivery,
    pub subscription: u64,
}

/// A consumer that outlives its channel: when the channel or the connection is lost, it
/// subscribes again (with backoff, in a background task, so a short deadline on
/// [`RabbitConsumer::next`] never cuts a subscription short) and goes on. Deliveries taken on
/// a lost channel cannot be acknowledged any more; the broker hands them out again.
pub struct RabbitConsumer {
    rabbit: Arc<Rabbit>,
    queue: String,
    prefetch: u16,
    current: Option<Subscription>,
    resubscribe: Option<tokio::task::JoinHandle<Option<Subscription>>>,
    closed: bool,
}

impl RabbitConsumer {
    /// The next delivery, waiting at most until `deadline` (`None`: as long as it takes).
    /// `None` when the deadline passed or the consumer (or its connection) was closed for good.
    /// Cancel-safe: dropping the future loses no delivery.
    pub async fn next(&mut self, deadline: Option<Instant>) -> Option<RawDelivery> {
        match deadline {
            Some(d) => tokio::time::timeout_at(d, self.next_inner())
                .await
                .ok()
                .flatten(),
            None => self.next_inner().await,
        }
    }

    async fn next_inner(&mut self) -> Option<RawDelivery> {
        loop {
            if self.closed {
                return None;
            }
            if self.current.is_none() {
                let (rabbit, queue, prefetch) =
                    (self.rabbit.clone(), self.queue.clone(), self.prefetch);
                let task = self.resubscribe.get_or_insert_with(|| {
                    tokio::spawn(Subscription::open_until_done(rabbit, queue, prefetch))
                });
                let sub = task.await;
                self.resubscribe = None;
                match sub {
                    Ok(Some(s)) => self.current = Some(s),
                    Ok(None) => {
                        self.closed = true;
                        return None;
                    }
                    Err(e) => {
                        tracing::warn!("subscribing to {}: {e}", self.queue);
                        continue;
                    }
                }
            }
            let sub = self.current.as_mut().expect("subscribed above");
            match sub.consumer.next().await {
                Some(Ok(delivery)) => {
                    return Some(RawDelivery {
                        delivery,
                        subscription: sub.id,
                    })
                }
                Some(Err(e)) => {
                    tracing::warn!(
                        "broker: consumer of {} lost ({e}); subscribing again",
                        self.queue
                    )
                }
                None => tracing::warn!(
                    "broker: consumer of {} was cancelled; subscribing again",
                    self.queue
                ),
            }
            self.current = None;
        }
    }

    /// Stops consuming: closing the channel hands its unacknowledged messages back.
    pub async fn close(&mut self) -> Result<()> {
        self.closed = true;
        if let Some(t) = self.resubscribe.take() {
            t.abort();
        }
        if let Some(s) = self.current.take() {
            if s.channel.status().connected() {
                s.channel.close(200, "consumer stopping").await?;
            }
        }
        Ok(())
    }
}

impl Drop for RabbitConsumer {
    fn drop(&mut self) {
        // A subscription made after the consumer is gone would hold messages nobody reads.
        if let Some(t) = self.resubscribe.take() {
            t.abort();
        }
    }
}

fn error_headers(error: &str) -> FieldTable {
    let mut h = FieldTable::default();
    let e: String = error.chars().take(1000).collect();
    h.insert(
        ShortString::from("x-error"),
        AMQPValue::LongString(LongString::from(e)),
    );
    h
}

/// Reads the `x-error` header of a parked message.
pub fn error_header(props: &BasicProperties) -> Option<String> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get("x-error")? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

/// How often [`JobQueue::maintain`] publishes jobs left `pending`.
pub const PENDING_SWEEP_EVERY: Duration = Duration::from_secs(2);
/// A job pending for less than this is left to the process that committed it.
pub const PENDING_GRACE: Duration = Duration::from_secs(2);
/// How often [`JobQueue::maintain`] checks the connection.
const MAINTAIN_TICK: Duration = Duration::from_millis(250);

/// Where jobs go and come from.
#[derive(Clone)]
pub enum JobQueue {
    Rabbit(Arc<Rabbit>),
    Local(LocalQueue),
}

/// The in-process queue: the jobs table is the queue (a restart resumes pending work);
/// a `Notify` wakes the worker as soon as a job is added.
#[derive(Clone)]
pub struct LocalQueue {
    pub store: Store,
    wake: Arc<Notify>,
}

impl LocalQueue {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Wakes a waiting consumer.
    pub fn notify(&self) {
        self.wake.notify_one();
    }
}

impl JobQueue {
    /// Connects the configured queue. `store` backs the local queue.
    pub async fn connect(cfg: &QueueConfig, store: &Store) -> Result<Self> {
        Ok(match cfg.kind {
            hashtale_core::config::QueueKind::Rabbitmq => {
                JobQueue::Rabbit(Arc::new(Rabbit::connect_with(cfg).await?))
            }
            hashtale_core::config::QueueKind::Local => {
                JobQueue::Local(LocalQueue::new(store.clone()))
            }
        })
    }

    /// The state a new job row starts in: `pending` until its message is confirmed by the
    /// broker, or `queued` directly for the local queue (the row is the message).
    pub fn initial_state(&self) -> JobState {
        match self {
            JobQueue::Rabbit(_) => JobState::Pending,
            JobQueue::Local(_) => JobState::Queued,
        }
    }

    /// Hands new jobs to the queue (publishes them, then marks their rows queued).
    pub async fn enqueue(&self, store: &Store, jobs: &[JobMessage]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        match self {
            JobQueue::Rabbit(r) => {
                r.publish_jobs(jobs).await?;
                let ids: Vec<i64> = jobs.iter().map(|j| j.job_id).collect();
                store.mark_queued(&ids).await?;
            }
            JobQueue::Local(l) => l.notify(),
        }
        Ok(())
    }

    /// Publishes jobs whose rows are still `pending` (a publisher died after its commit, or the
    /// broker was away); on the in-process queue, marks them `queued`. Never touches running
    /// jobs.
    pub async fn republish_pending(&self, store: &Store) -> Result<usize> {
        self.republish_pending_before(store, i64::MAX).await
    }

    /// [`JobQueue::republish_pending`] for jobs pending since before `before_ms` (ms since the
    /// epoch) only.
    pub async fn republish_pending_before(&self, store: &Store, before_ms: i64) -> Result<usize> {
        let mut total = 0;
        loop {
            let pending = store.pending_jobs_before(500, before_ms).await?;
            if pending.is_empty() {
                return Ok(total);
            }
            let msgs: Vec<JobMessage> = pending
                .iter()
                .map(|&(job_id, post_id)| JobMessage { job_id, post_id })
                .collect();
            match self {
                JobQueue::Rabbit(_) => self.enqueue(store, &msgs).await?,
                // The in-process queue reads `queued` rows: a pending job only needs its state
                // moved. Jobs a live worker is running are left alone.
                JobQueue::Local(_) => {
                    let ids: Vec<i64> = msgs.iter().map(|m| m.job_id).collect();
                    store.mark_queued(&ids).await?;
                }
            }
            total += msgs.len();
        }
    }

    /// Keeps a broker user's jobs flowing, for as long as the process runs (abort or drop it to
    /// stop; it is safe to cut anywhere): reconnects when the connection is lost (with
    /// backoff), and publishes the jobs left `pending` right after each reconnect and every
    /// [`PENDING_SWEEP_EVERY`] (those pending for over [`PENDING_GRACE`], so that a job whose
    /// own publish is under way is not sent twice). Returns at once for the in-process queue.
    pub async fn maintain(self, store: Store) {
        let JobQueue::Rabbit(r) = &self else { return };
        let mut seen = 0;
        let mut last_sweep: Option<Instant> = None;
        loop {
            if r.closed.load(Ordering::SeqCst) {
                return;
            }
            if r.ensure().await.is_ok() {
                let connects = r.connects();
                if connects != seen || last_sweep.is_none_or(|t| t.elapsed() >= PENDING_SWEEP_EVERY)
                {
                    let before = now_ms() - PENDING_GRACE.as_millis() as i64;
                    match self.republish_pending_before(&store, before).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!("published {n} jobs left pending"),
                        Err(e) => tracing::warn!("publishing pending jobs: {e}"),
                    }
                    seen = connects;
                    last_sweep = Some(Instant::now());
                }
            }
            tokio::time::sleep(MAINTAIN_TICK).await;
        }
    }

    /// Checks the broker connection, attempting a reconnect when the backoff allows one (for
    /// `/readyz`).
    pub async fn check_ready(&self) -> bool {
        match self {
            JobQueue::Rabbit(r) => r.ensure().await.is_ok(),
            JobQueue::Local(_) => true,
        }
    }

    /// A consumer handing out up to `prefetch` jobs at a time.
    pub async fn consumer(&self, prefetch: usize) -> Result<JobConsumer> {
        Ok(match self {
            JobQueue::Rabbit(r) => JobConsumer::Rabbit(Box::new(
                r.consumer(&r.names.jobs, prefetch.clamp(1, u16::MAX as usize) as u16)
                    .await?,
            )),
            JobQueue::Local(l) => JobConsumer::Local {
                q: l.clone(),
                buf: VecDeque::new(),
                prefetch: prefetch.max(1),
            },
        })
    }

    /// Records a failed attempt. Retryable errors with attempts left go back with exponential
    /// backoff; otherwise the job fails for good (RabbitMQ: parked in the dead-letter queue).
    /// The row is updated before the delivery is acknowledged.
    pub async fn fail(
        &self,
        store: &Store,
        cfg: &QueueConfig,
        d: Delivery,
        attempts: i64,
        error: &str,
        retryable: bool,
    ) -> Result<()> {
        let retry = retryable && attempts < cfg.max_attempts as i64;
        let delay = retry_delay_ms(cfg, attempts);
        match self {
            JobQueue::Rabbit(r) => {
                let (new_state, available_at) = if retry {
                    (JobState::Retrying, now_ms() + delay as i64)
                } else {
                    (JobState::Failed, now_ms())
                };
                let moved = match store
                    .fail_job(d.msg.job_id, error, new_state, available_at)
                    .await
                {
                    Ok(()) if retry => r.publish_retry(&d.msg, delay, error).await,
                    Ok(()) => r.publish_dead(&d.msg, error).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = moved {
                    // Neither acknowledge (the job would be lost) nor leave the delivery
                    // hanging (it would hold a prefetch slot until the channel closes): give
                    // it back for another try.
                    let _ = d.requeue(store).await;
                    return Err(e);
                }
            }
            JobQueue::Local(_) => {
                if retry {
                    store
                        .fail_job(
                            d.msg.job_id,
                            error,
                            JobState::Queued,
                            now_ms() + delay as i64,
                        )
                        .await?;
                } else {
                    store
                        .fail_job(d.msg.job_id, error, JobState::Failed, now_ms())
                        .await?;
                }
            }
        }
        d.ack().await
    }

    /// Jobs waiting in the queue (for `/metrics`).
    pub async fn depth(&self, store: &Store) -> Result<u64> {
        match self {
            JobQueue::Rabbit(r) => Ok(r.depth(&r.names.jobs).await? as u64),
            JobQueue::Local(_) => Ok(store
                .job_counts()
                .await?
                .into_iter()
                .find(|(s, _)| *s == JobState::Queued)
                .map_or(0, |(_, n)| n as u64)),
        }
    }

    /// Checks the broker connection (for `/readyz`).
    pub fn is_ready(&self) -> bool {
        match self {
            JobQueue::Rabbit(r) => r.is_connected(),
            JobQueue::Local(_) => true,
        }
    }

    pub fn rabbit(&self) -> Option<&Arc<Rabbit>> {
        match self {
            JobQueue::Rabbit(r) => Some(r),
            JobQueue::Local(_) => None,
        }
    }
}

/// A delivery's tag, qualified by the subscription (channel) it came on: tags restart at 1 on
/// every channel, and a consumer that subscribed again hands out deliveries of both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeliveryTag {
    pub subscription: u64,
    pub tag: u64,
}

/// How to acknowledge a delivery.
pub enum Acker {
    /// The acker and its delivery tag on the consumer's channel.
    Rabbit(lapin::acker::Acker, DeliveryTag),
    /// The local queue's row state is the acknowledgement.
    Local,
}

/// One job handed to a worker.
pub struct Delivery {
    pub msg: JobMessage,
    pub redelivered: bool,
    acker: Acker,
}

impl Delivery {
    /// Acknowledges (after the outcome is committed).
    pub async fn ack(self) -> Result<()> {
        if let Acker::Rabbit(a, _) = self.acker {
            a.ack(BasicAckOptions::default()).await?;
        }
        Ok(())
    }

    /// The broker's delivery tag (RabbitMQ; `None` for the in-process queue).
    pub fn tag(&self) -> Option<DeliveryTag> {
        match self.acker {
            Acker::Rabbit(_, tag) => Some(tag),
            Acker::Local => None,
        }
    }

    /// Acknowledges each delivery on its own (when some delivery with a lower tag is still
    /// unsettled elsewhere, so a `multiple` ack would take it too).
    pub async fn ack_each(deliveries: Vec<Delivery>) -> Result<()> {
        let acks = deliveries.into_iter().map(|d| d.ack());
        for r in futures::future::join_all(acks).await {
            r?;
        }
        Ok(())
    }

    /// Acknowledges a batch of deliveries from one consumer with a single `multiple` ack up
    /// to the highest delivery tag of each channel they came on. Sound only because every
    /// delivery with a lower tag on that channel is settled already: the worker's stages hand batches on in delivery order, a
    /// delivery that leaves its batch early (failed, skipped) is settled before the batch
    /// moves on, and while a late one (a slow fetch that joins a later batch) is unsettled,
    /// the worker uses [`Delivery::ack_each`] instead.
    pub async fn ack_all(deliveries: Vec<Delivery>) -> Result<()> {
        let mut last: std::collections::BTreeMap<u64, (u64, lapin::acker::Acker)> =
            Default::default();
        for d in deliveries {
            if let Acker::Rabbit(a, t) = d.acker {
                match last.get(&t.subscription) {
                    Some((max, _)) if *max >= t.tag => {}
                    _ => {
                        last.insert(t.subscription, (t.tag, a));
                    }
                }
            }
        }
        let mut outcome = Ok(());
        for (_, (_, a)) in last {
            if let Err(e) = a.ack(BasicAckOptions { multiple: true }).await {
                outcome = Err(e.into());
            }
        }
        outcome
    }

    /// Gives the job back to the queue untouched (graceful shutdown).
    pub async fn requeue(self, store: &Store) -> Result<()> {
        match self.acker {
            Acker::Rabbit(a, _) => {
                a.nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await?
            }
            Acker::Local => {
                store
                    .fail_job(
                        self.msg.job_id,
                        "requeued at shutdown",
                        JobState::Queued,
                        now_ms(),
                    )
                    .await?
            }
        }
        Ok(())
    }
}

/// The receiving side of a [`JobQueue`].
pub enum JobConsumer {
    /// Subscribes again by itself when the broker connection is lost.
    Rabbit(Box<RabbitConsumer>),
    Local {
        q: LocalQueue,
        buf: VecDeque<Delivery>,
        prefetch: usize,
    },
}

impl JobConsumer {
    /// The next delivery, waiting at most until `deadline` (`None`: wait as long as it takes).
    /// `Ok(None)` means the deadline passed (or the consumer was closed).
    pub async fn next(&mut self, deadline: Option<Instant>) -> Result<Option<Delivery>> {
        match self {
            JobConsumer::Rabbit(c) => loop {
                let Some(RawDelivery {
                    delivery: d,
                    subscription,
                }) = c.next(deadline).await
                else {
                    return Ok(None);
                };
                match serde_json::from_slice::<JobMessage>(&d.data) {
                    Ok(msg) => {
                        let tag = DeliveryTag {
                            subscription,
                            tag: d.delivery_tag,
                        };
                        return Ok(Some(Delivery {
                            msg,
                            redelivered: d.redelivered,
                            acker: Acker::Rabbit(d.acker, tag),
                        }));
                    }
                    Err(e) => {
                        // Not a job message: park it (the queue dead-letters rejects).
                        tracing::warn!("rejecting malformed job message: {e}");
                        let nack = d.acker.nack(BasicNackOptions {
                            requeue: false,
                            ..Default::default()
                        });
                        if let Err(e) = nack.await {
                            // The channel is gone: the broker hands it out again.
                            tracing::warn!("rejecting a malformed job message: {e}");
                        }
                    }
                }
            },
            JobConsumer::Local { q, buf, prefetch } => loop {
                if let Some(d) = buf.pop_front() {
                    return Ok(Some(d));
                }
                let claimed = q.store.claim(*prefetch as i64).await?;
                if !claimed.is_empty() {
                    buf.extend(claimed.into_iter().map(|c| Delivery {
                        msg: JobMessage {
                            job_id: c.job_id,
                            post_id: c.post_id,
                        },
                        redelivered: c.attempts > 0,
                        acker: Acker::Local,
                    }));
                    continue;
                }
                // Sleep until woken, the next retry is due, or a short poll interval.
                let mut wake = Instant::now() + Duration::from_millis(500);
                if let Some(due) = q.store.next_due().await? {
                    let ms = (due - now_ms()).clamp(1, 500) as u64;
                    wake = Instant::now() + Duration::from_millis(ms);
                }
                if let Some(d) = deadline {
                    if Instant::now() >= d {
                        return Ok(None);
                    }
                    wake = wake.min(d);
                }
                let _ = tokio::time::timeout_at(wake, q.wake.notified()).await;
            },
        }
    }

    /// Gives back jobs taken but not handed out (graceful shutdown): RabbitMQ requeues the
    /// channel's unacknowledged messages when it closes; local claims go back to `queued`.
    pub async fn release(&mut self, store: &Store) -> Result<()> {
        match self {
            JobConsumer::Rabbit(c) => c.close().await?,
            JobConsumer::Local { buf, .. } => {
                while let Some(d) = buf.pop_front() {
                    d.requeue(store).await?;
                }
            }
        }
        Ok(())
    }
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

    #[tokio::test]
    async fn connecting_to_no_broker_fails_fast() {
        // Nothing listens on this port: the first connection fails (and says so).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
        let t = std::time::Instant::now();
        assert!(Rabbit::connect(&url, "t").await.is_err());
        assert!(t.elapsed() < CONNECT_TIMEOUT);
    }
}
