//! The RabbitMQ connection: publishing with confirms, consumers that subscribe again, and
//! reconnecting when the broker comes back.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::time::Instant;

use hashtale_core::config::QueueConfig;
use hashtale_core::{Error, Result};
use hashtale_types::{JobMessage, ResultMessage};

use crate::topology::{declare_retry, declare_topology, retry_delays, Backoff, Names};

fn persistent_json() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
}

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
    pub(crate) closed: AtomicBool,
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

#[cfg(test)]
mod tests {
    use super::*;

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
