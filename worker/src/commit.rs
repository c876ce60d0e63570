//! The commit stage: stores a batch's results with what they owe in the outbox, then
//! acknowledges its deliveries.

use std::collections::HashMap;
use std::time::Duration;

use hashtale_core::metrics;
use hashtale_core::Result;
use hashtale_queue::{Delivery, DeliveryTag};
use hashtale_store::{NewResult, Owed};
use hashtale_types::ResultMessage;

use crate::batcher::Late;
use crate::{Inferred, Worker};

impl Worker {
    /// Commits the batch's results (recording what they owe in the outbox), then acknowledges
    /// its deliveries; returns the messages of the results it created, for delivery.
    pub(crate) async fn commit(
        &self,
        inferred: Inferred,
        version: &str,
        late: &Late,
    ) -> Result<Vec<ResultMessage>> {
        let Inferred { batch, outputs } = inferred;
        let n = batch.len();
        let mut results = Vec::with_capacity(n);
        let mut deliveries = Vec::with_capacity(n);
        let mut messages = HashMap::with_capacity(n);
        for (r, output) in batch.into_iter().zip(outputs) {
            let story = output.story.clone();
            let timings = r.timings;
            messages.insert(
                r.item.job_id,
                ResultMessage {
                    result_id: 0,
                    post_id: r.item.post_id,
                    job_id: r.item.job_id,
                    source: r.item.source,
                    external_id: r.item.external_id,
                    model_version: version.to_string(),
                    output: output.clone(),
                },
            );
            results.push(NewResult {
                job_id: r.item.job_id,
                post_id: r.item.post_id,
                output,
                story,
                timings,
            });
            deliveries.push(r.delivery);
        }
        let owed = Owed {
            publish: self.queue.rabbit().is_some(),
            webhook: !self.cfg.worker.webhook_url.is_empty(),
        };
        let committed = match self.store.complete_with(version, &results, owed).await {
            Ok(c) => c,
            Err(e) => {
                // Nothing committed: give the jobs back untouched for another try.
                tracing::error!("committing {n} results: {e}");
                for d in deliveries {
                    let tag = d.tag();
                    let _ = d.requeue(&self.store).await;
                    late.settled([tag]);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                return Err(e);
            }
        };
        // The outcome is durable, and what it owes is in the outbox: acknowledge now.
        // One `multiple` ack, unless a late delivery with a lower tag is still unsettled.
        let tags: Vec<DeliveryTag> = deliveries.iter().filter_map(Delivery::tag).collect();
        let acked = if late.multiple_ack_ok(&tags) {
            Delivery::ack_all(deliveries).await
        } else {
            Delivery::ack_each(deliveries).await
        };
        late.settled(tags.into_iter().map(Some));
        if let Err(e) = acked {
            tracing::warn!("ack after commit failed (jobs will be redelivered and skipped): {e}");
        }
        metrics::jobs_succeeded(n as u64);
        // Only results this commit created are announced (one that existed was announced by
        // whoever created it).
        Ok(committed
            .iter()
            .filter_map(|c| {
                messages.remove(&c.job_id).map(|mut msg| {
                    msg.result_id = c.result_id;
                    msg
                })
            })
            .collect())
    }
}
