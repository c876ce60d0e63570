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
use std::collections::{BTreeSet, VecDeque};
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

use crate::config::QueueConfig;
use crate::store::{state, Store};
use crate::types::{now_ms, JobMessage, ResultMessage};
use crate::{Error, Result};

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

/// A RabbitMQ connection with a confirming publisher channel. Cheap to share (`Arc`).
pub struct Rabbit {
    conn: Connection,
    publisher: Channel,
    pub names: Names,
    /// Delays whose retry queue this connection declared.
    retry_queues: Mutex<BTreeSet<u64>>,
}

impl Rabbit {
    /// Connects and declares the whole topology (idempotent).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        let conn = Connection::connect(url, ConnectionProperties::default()).await?;
        let publisher = conn.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let names = Names::new(prefix);
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        publisher
            .queue_declare(&names.dead, durable, FieldTable::default())
            .await?;
        publisher
            .queue_declare(&names.jobs, durable, dead_letter_to(&names.dead))
            .await?;
        publisher
            .queue_declare(&names.ingest, durable, dead_letter_to(&names.dead))
            .await?;
        publisher
            .exchange_declare(
                &names.results,
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            conn,
            publisher,
            names,
            retry_queues: Mutex::new(BTreeSet::new()),
        })
    }

    /// Connects and also declares the retry queue of every delay `cfg` can produce.
    pub async fn connect_with(cfg: &QueueConfig) -> Result<Self> {
        let r = Self::connect(&cfg.amqp_url, &cfg.prefix).await?;
        for delay in retry_delays(cfg) {
            r.declare_retry_queue(delay).await?;
        }
        Ok(r)
    }

    /// Declares the retry queue for `delay_ms` (once per connection; idempotent on the broker).
    pub async fn declare_retry_queue(&self, delay_ms: u64) -> Result<String> {
        let name = self.names.retry_queue(delay_ms);
        if self.retry_queues.lock().expect("lock").contains(&delay_ms) {
            return Ok(name);
        }
        let mut args = dead_letter_to(&self.names.jobs);
        args.insert(
            ShortString::from("x-message-ttl"),
            AMQPValue::LongLongInt(delay_ms.min(i64::MAX as u64) as i64),
        );
        self.publisher
            .queue_declare(
                &name,
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await?;
        self.retry_queues.lock().expect("lock").insert(delay_ms);
        Ok(name)
    }

    /// Publishes `body` to queue `queue` (default exchange) and waits for the broker's confirm.
    pub async fn publish(&self, queue: &str, body: &[u8], props: BasicProperties) -> Result<()> {
        let confirm = self
            .publisher
            .basic_publish("", queue, BasicPublishOptions::default(), body, props)
            .await?
            .await?;
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
        let mut confirms = Vec::with_capacity(messages.len());
        for m in messages {
            let body = serde_json::to_vec(m)?;
            confirms.push(
                self.publisher
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
        for c in confirms {
            if c.await?.is_nack() {
                return Err(Error::Transient(format!("broker refused a {what} message")));
            }
        }
        Ok(())
    }

    /// A consumer of `queue` on its own channel, with `prefetch` unacknowledged messages.
    /// Closing the channel hands every unacknowledged message back to the broker.
    pub async fn consume(&self, queue: &str, prefetch: u16) -> Result<(Channel, lapin::Consumer)> {
        let ch = self.conn.create_channel().await?;
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

    /// Declares an exclusive, auto-deleted queue bound to the results exchange (tests, tools).
    pub async fn subscribe_results(&self) -> Result<lapin::Consumer> {
        let ch = self.conn.create_channel().await?;
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
        let ch = self.conn.create_channel().await?;
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
        Ok(self
            .publisher
            .queue_purge(queue, QueuePurgeOptions::default())
            .await?)
    }

    /// Deletes every queue and the exchange of this prefix (test clean-up), the retry queues
    /// this connection declared included.
    pub async fn delete_topology(&self) -> Result<()> {
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
            self.publisher
                .queue_delete(q, QueueDeleteOptions::default())
                .await?;
        }
        self.publisher
            .exchange_delete(&self.names.results, Default::default())
            .await?;
        Ok(())
    }

    pub fn is_connected(&self) -> bool {
        self.conn.status().connected()
    }

    pub async fn close(&self) {
        let _ = self.conn.close(200, "bye").await;
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
            crate::config::QueueKind::Rabbitmq => {
                JobQueue::Rabbit(Arc::new(Rabbit::connect_with(cfg).await?))
            }
            crate::config::QueueKind::Local => JobQueue::Local(LocalQueue::new(store.clone())),
        })
    }

    /// The state a new job row starts in: `pending` until its message is confirmed by the
    /// broker, or `queued` directly for the local queue (the row is the message).
    pub fn initial_state(&self) -> &'static str {
        match self {
            JobQueue::Rabbit(_) => state::PENDING,
            JobQueue::Local(_) => state::QUEUED,
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

    /// Publishes jobs whose rows are still `pending` (a publisher died after its commit); on the
    /// in-process queue, marks them `queued`. Never touches running jobs.
    pub async fn republish_pending(&self, store: &Store) -> Result<usize> {
        let mut total = 0;
        loop {
            let pending = store.pending_jobs(500).await?;
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

    /// A consumer handing out up to `prefetch` jobs at a time.
    pub async fn consumer(&self, prefetch: usize) -> Result<JobConsumer> {
        Ok(match self {
            JobQueue::Rabbit(r) => {
                let (ch, c) = r
                    .consume(&r.names.jobs, prefetch.clamp(1, u16::MAX as usize) as u16)
                    .await?;
                JobConsumer::Rabbit(ch, c)
            }
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
                    (state::RETRYING, now_ms() + delay as i64)
                } else {
                    (state::FAILED, now_ms())
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
                        .fail_job(d.msg.job_id, error, state::QUEUED, now_ms() + delay as i64)
                        .await?;
                } else {
                    store
                        .fail_job(d.msg.job_id, error, state::FAILED, now_ms())
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
                .find(|(s, _)| s == state::QUEUED)
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

/// How to acknowledge a delivery.
pub enum Acker {
    /// The acker and its delivery tag on the consumer's channel.
    Rabbit(lapin::acker::Acker, u64),
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
    pub fn tag(&self) -> Option<u64> {
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
    /// to the highest delivery tag. Sound only because every delivery with a lower tag on that
    /// channel is settled already: the worker's stages hand batches on in delivery order, a
    /// delivery that leaves its batch early (failed, skipped) is settled before the batch
    /// moves on, and while a late one (a slow fetch that joins a later batch) is unsettled,
    /// the worker uses [`Delivery::ack_each`] instead.
    pub async fn ack_all(deliveries: Vec<Delivery>) -> Result<()> {
        let last = deliveries
            .into_iter()
            .filter_map(|d| match d.acker {
                Acker::Rabbit(a, tag) => Some((tag, a)),
                Acker::Local => None,
            })
            .max_by_key(|(tag, _)| *tag);
        if let Some((_, a)) = last {
            a.ack(BasicAckOptions { multiple: true }).await?;
        }
        Ok(())
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
                        state::QUEUED,
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
    Rabbit(Channel, lapin::Consumer),
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
            JobConsumer::Rabbit(_, c) => loop {
                let item = match deadline {
                    Some(d) => match tokio::time::timeout_at(d, c.next()).await {
                        Ok(i) => i,
                        Err(_) => return Ok(None),
                    },
                    None => c.next().await,
                };
                let Some(item) = item else { return Ok(None) };
                let d = item?;
                match serde_json::from_slice::<JobMessage>(&d.data) {
                    Ok(msg) => {
                        return Ok(Some(Delivery {
                            msg,
                            redelivered: d.redelivered,
                            acker: Acker::Rabbit(d.acker, d.delivery_tag),
                        }))
                    }
                    Err(e) => {
                        // Not a job message: park it (the queue dead-letters rejects).
                        tracing::warn!("rejecting malformed job message: {e}");
                        d.acker
                            .nack(BasicNackOptions {
                                requeue: false,
                                ..Default::default()
                            })
                            .await?;
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
            JobConsumer::Rabbit(ch, _) => {
                if ch.status().connected() {
                    ch.close(200, "worker stopping").await?;
                }
            }
            JobConsumer::Local { buf, .. } => {
                while let Some(d) = buf.pop_front() {
                    d.requeue(store).await?;
                }
            }
        }
        Ok(())
    }
}
