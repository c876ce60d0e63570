//! The RabbitMQ ingest queue: JSON messages `{source, external_id, image_url | image_base64,
//! caption?}`. A message is acknowledged once its post (and job) is committed; a malformed
//! one is rejected into the dead-letter queue. The consumer subscribes again when the broker
//! comes back after a loss; a message whose ack was lost with the connection comes again and
//! finds its post known.
use std::sync::Arc;

use hashtale_core::Result;
use hashtale_queue::{Rabbit, RawDelivery};
use hashtale_types::IngestMessage;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio_util::sync::CancellationToken;

use hashtale_ingest::{Ingestor, PostDraft};

/// Consumes `{prefix}.ingest` until `cancel` (the message in hand is committed and
/// acknowledged first).
pub async fn consume_ingest(
    ing: Ingestor,
    rabbit: Arc<Rabbit>,
    cancel: CancellationToken,
) -> Result<()> {
    let mut consumer = rabbit.consumer(&rabbit.names.ingest, 64).await?;
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => break,
            d = consumer.next(None) => d,
        };
        let Some(RawDelivery { delivery: d, .. }) = next else {
            break;
        };
        let post = serde_json::from_slice::<IngestMessage>(&d.data)
            .map_err(|e| hashtale_core::Error::BadInput(e.to_string()))
            .and_then(PostDraft::from_message)
            .and_then(|draft| ing.check("ingest", draft));
        let settled = match post {
            Ok(post) => match ing.ingest(&post).await {
                Ok(_) => d.acker.ack(BasicAckOptions::default()).await,
                Err(e) => {
                    // The store is in trouble: leave the message for later.
                    tracing::error!("ingest: {e}");
                    let r = d
                        .acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await;
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    r
                }
            },
            Err(e) => {
                tracing::warn!("rejecting ingest message: {e}");
                d.acker
                    .nack(BasicNackOptions {
                        requeue: false,
                        ..Default::default()
                    })
                    .await
            }
        };
        if let Err(e) = settled {
            // The channel went with the connection: the broker hands the message out again.
            tracing::warn!("ingest: settling a message: {e}");
        }
    }
    consumer.close().await
}
