//! The RabbitMQ ingest queue: JSON messages `{source, external_id, image_url | image_base64,
//! caption?}`. A message is acknowledged once its post (and job) is committed; a malformed
//! one is rejected into the dead-letter queue.
use std::sync::Arc;

use futures::StreamExt;
use hashtale_core::queue::Rabbit;
use hashtale_core::types::IngestMessage;
use hashtale_core::Result;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio_util::sync::CancellationToken;

use crate::Ingestor;

/// Consumes `{prefix}.ingest` until `cancel` (the message in hand is committed and
/// acknowledged first).
pub async fn consume_ingest(
    ing: Ingestor,
    rabbit: Arc<Rabbit>,
    cancel: CancellationToken,
) -> Result<()> {
    let (_channel, mut consumer) = rabbit.consume(&rabbit.names.ingest, 64).await?;
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            d = consumer.next() => d,
        };
        let Some(d) = next else { return Ok(()) };
        let d = d?;
        let post = serde_json::from_slice::<IngestMessage>(&d.data)
            .map_err(|e| hashtale_core::Error::BadInput(e.to_string()))
            .and_then(|m| m.into_new_post("ingest"));
        match post {
            Ok(post) => match ing.ingest(&post).await {
                Ok(_) => d.acker.ack(BasicAckOptions::default()).await?,
                Err(e) => {
                    // The store or broker is in trouble: leave the message for later.
                    tracing::error!("ingest: {e}");
                    d.acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await?;
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            },
            Err(e) => {
                tracing::warn!("rejecting ingest message: {e}");
                d.acker
                    .nack(BasicNackOptions {
                        requeue: false,
                        ..Default::default()
                    })
                    .await?;
            }
        }
    }
}
