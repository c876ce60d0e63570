//! Delivering results at least once: the confirmed deliveries waiting to be recorded
//! ([`Marks`]), fresh deliveries after a commit, and the periodic sweep of what is owed.

use std::time::Duration;

use hashtale_core::Result;
use hashtale_queue::JobQueue;
use hashtale_store::Store;
use hashtale_types::{now_ms, ResultMessage};

use crate::webhook::Webhook;

/// How often the outbox is swept for owed deliveries.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// A result younger than this is left to the worker that committed it (it is probably
/// publishing it right now; sweeping it too would only duplicate the message).
pub const SWEEP_GRACE: Duration = Duration::from_secs(5);
/// Webhook calls owed for longer than this are given up (an endpoint gone for a day should
/// not get the backlog of the whole history when it comes back).
pub const WEBHOOK_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Deliveries confirmed but not yet recorded in the outbox. Recording them is batched (one
/// UPDATE per [`MARK_FLUSH_EVERY`] or [`MARK_FLUSH_AT`] results, not one per model batch):
/// a crash loses at most that window of records, and the sweep then sends those results again,
/// which at-least-once delivery allows.
#[derive(Default)]
pub(crate) struct Marks {
    published: Vec<i64>,
    webhook: Vec<i64>,
    since: Option<tokio::time::Instant>,
}

/// Longest a confirmed delivery waits to be recorded (well under [`SWEEP_GRACE`]).
pub(crate) const MARK_FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Most confirmed deliveries waiting to be recorded.
pub(crate) const MARK_FLUSH_AT: usize = 512;

impl Marks {
    fn add(&mut self, what: hashtale_store::Outbox, ids: impl IntoIterator<Item = i64>) {
        let list = match what {
            hashtale_store::Outbox::Publish => &mut self.published,
            hashtale_store::Outbox::Webhook => &mut self.webhook,
        };
        let before = list.len();
        list.extend(ids);
        if list.len() > before && self.since.is_none() {
            self.since = Some(tokio::time::Instant::now());
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.published.len() + self.webhook.len()
    }

    /// When the oldest waiting record is due.
    pub(crate) fn due(&self) -> Option<tokio::time::Instant> {
        self.since.map(|t| t + MARK_FLUSH_EVERY)
    }

    pub(crate) async fn flush(&mut self, store: &Store) {
        for (what, ids) in [
            (
                hashtale_store::Outbox::Publish,
                std::mem::take(&mut self.published),
            ),
            (
                hashtale_store::Outbox::Webhook,
                std::mem::take(&mut self.webhook),
            ),
        ] {
            if let Err(e) = store.mark_delivered(what, &ids).await {
                // Left owed: the sweep sends these again.
                tracing::warn!("recording {} deliveries ({what:?}): {e}", ids.len());
            }
        }
        self.since = None;
    }
}

/// Delivers freshly committed results: publishes them (confirmed) and calls the webhook,
/// noting what succeeded in `marks`. Whatever fails stays owed for the sweep.
pub(crate) async fn deliver(
    queue: &JobQueue,
    webhook: &Option<Webhook>,
    messages: Vec<ResultMessage>,
    marks: &mut Marks,
) {
    if let Some(rabbit) = queue.rabbit() {
        match rabbit.publish_results(&messages).await {
            Ok(()) => marks.add(
                hashtale_store::Outbox::Publish,
                messages.iter().map(|m| m.result_id),
            ),
            Err(e) => tracing::warn!(
                "publishing {} result messages (the sweep will retry): {e}",
                messages.len()
            ),
        }
    }
    if let Some(hook) = webhook {
        let sent = hook.post_all(&messages).await;
        marks.add(hashtale_store::Outbox::Webhook, sent);
    }
}

/// What one sweep delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub published: usize,
    pub webhooks: usize,
}

/// Delivers what the outbox owes for results older than `grace`: result messages (RabbitMQ)
/// and webhook calls (when configured; calls owed longer than [`WEBHOOK_MAX_AGE`] are not
/// retried). Several workers may sweep at once, so a result can be sent twice: delivery is
/// at least once, and consumers deduplicate by `result_id`.
pub async fn sweep_outbox(
    store: &Store,
    queue: &JobQueue,
    webhook: &Option<Webhook>,
    grace: Duration,
) -> Result<Swept> {
    const PAGE: i64 = 500;
    let mut swept = Swept::default();
    let before = now_ms() - grace.as_millis() as i64;
    if let Some(rabbit) = queue.rabbit() {
        loop {
            let owed = store
                .owed_results(hashtale_store::Outbox::Publish, 0, before, PAGE)
                .await?;
            if owed.is_empty() {
                break;
            }
            rabbit.publish_results(&owed).await?;
            let ids: Vec<i64> = owed.iter().map(|m| m.result_id).collect();
            store
                .mark_delivered(hashtale_store::Outbox::Publish, &ids)
                .await?;
            swept.published += ids.len();
            if (owed.len() as i64) < PAGE {
                break;
            }
        }
    }
    if let Some(hook) = webhook {
        let after = now_ms() - WEBHOOK_MAX_AGE.as_millis() as i64;
        loop {
            let owed = store
                .owed_results(hashtale_store::Outbox::Webhook, after, before, PAGE)
                .await?;
            let sent = hook.post_all(&owed).await;
            store
                .mark_delivered(hashtale_store::Outbox::Webhook, &sent)
                .await?;
            swept.webhooks += sent.len();
            if sent.len() < owed.len() || (owed.len() as i64) < PAGE {
                break;
            }
        }
    }
    if swept != Swept::default() {
        tracing::info!(
            "outbox sweep: {} result messages, {} webhook calls delivered",
            swept.published,
            swept.webhooks
        );
    }
    Ok(swept)
}
