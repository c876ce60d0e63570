//! The result webhook: signed POSTs of result messages.

use std::time::Duration;

use hashtale_core::config::Config;
use hashtale_core::{Error, Result};
use hashtale_types::ResultMessage;

/// HMAC-SHA256 of `body` with `secret`, hex: sent as `X-Hashtale-Signature: sha256=…`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    hex::encode(hashtale_core::sign::hmac_sha256(secret.as_bytes(), body))
}

/// The configured result webhook, with one HTTP client for all its calls.
pub struct Webhook {
    url: String,
    secret: hashtale_core::config::Secret,
    client: reqwest::Client,
}

impl Webhook {
    /// `None` when no webhook is configured.
    pub fn new(cfg: &Config) -> Result<Option<Self>> {
        if cfg.worker.webhook_url.is_empty() {
            return Ok(None);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Config(format!("webhook client: {e}")))?;
        Ok(Some(Self {
            url: cfg.worker.webhook_url.clone(),
            secret: cfg.worker.webhook_secret.clone(),
            client,
        }))
    }

    /// POSTs one signed message; `Ok` once the endpoint answered 2xx.
    pub async fn post(&self, m: &ResultMessage) -> Result<()> {
        let body = serde_json::to_vec(m)?;
        let sig = format!("sha256={}", sign(self.secret.expose(), &body));
        let resp = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-hashtale-signature", &sig)
            .body(body)
            .send()
            .await
            .map_err(|e| Error::Transient(format!("webhook: {e}")))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(Error::Transient(format!(
                "webhook answered {}",
                resp.status()
            )))
        }
    }

    /// POSTs each message (stopping at the first failure: the endpoint is probably down and
    /// the rest stays owed); returns the result ids delivered.
    pub(crate) async fn post_all(&self, messages: &[ResultMessage]) -> Vec<i64> {
        let mut sent = Vec::with_capacity(messages.len());
        for m in messages {
            match self.post(m).await {
                Ok(()) => sent.push(m.result_id),
                Err(e) => {
                    tracing::warn!("{e} (result {} stays owed)", m.result_id);
                    break;
                }
            }
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn webhook_signature_is_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            super::sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
