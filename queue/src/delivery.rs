//! What consumers hand out: deliveries, their tags and acknowledgement, and the consumer
//! of either queue.

use std::collections::VecDeque;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::time::Instant;

use hashtale_core::Result;
use hashtale_store::Store;
use hashtale_types::{now_ms, JobMessage, JobState};

use crate::local::LocalQueue;
use crate::rabbit::{RabbitConsumer, RawDelivery};

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
                let claimed = q.claim(*prefetch as i64).await?;
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
                if let Some(due) = q.next_due().await? {
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
