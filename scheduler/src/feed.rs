//! RSS, Atom and JSON Feed sources: each entry's image enclosures / media content become
//! posts. Polled on an interval with conditional requests (ETag, Last-Modified), through
//! the same safe HTTP client as image fetches.
use std::time::Duration;

use hashtale_core::config::redact_url;
use hashtale_core::{Error, Result};
use hashtale_fetch::{read_body_capped, Fetcher};
use hashtale_types::{ImageSource, NewPost};
use tokio_util::sync::CancellationToken;

use crate::Ingestor;

/// Largest feed document read.
const MAX_FEED_BYTES: usize = 10 * 1024 * 1024;

fn looks_like_image(url: &str, media_type: Option<&str>) -> bool {
    match media_type {
        Some(t) => t.to_ascii_lowercase().starts_with("image/"),
        None => {
            let path = url
                .split(['?', '#'])
                .next()
                .unwrap_or(url)
                .to_ascii_lowercase();
            crate::dir::IMAGE_EXTENSIONS
                .iter()
                .any(|e| path.ends_with(&format!(".{e}")))
        }
    }
}

/// The posts of a parsed feed document (one per image; an entry with several images gives
/// `ID#2`, `ID#3`, … for the extra ones).
pub fn posts_from_feed(source: &str, body: &[u8]) -> Result<Vec<NewPost>> {
    let feed =
        feed_rs::parser::parse(body).map_err(|e| Error::BadInput(format!("feed {source}: {e}")))?;
    // JSON Feed items may name their picture in `image` (feed-rs keeps only attachments).
    let json_images: std::collections::HashMap<String, String> =
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("items").and_then(|i| i.as_array()).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|item| {
                let id = match item.get("id")? {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Some((id, item.get("image")?.as_str()?.to_string()))
            })
            .collect();
    let mut posts = Vec::new();
    for entry in feed.entries {
        let mut urls: Vec<String> = Vec::new();
        if let Some(u) = json_images.get(&entry.id) {
            urls.push(u.clone());
        }
        for m in &entry.media {
            for c in &m.content {
                if let Some(u) = &c.url {
                    let t = c.content_type.as_ref().map(|t| t.to_string());
                    if looks_like_image(u.as_str(), t.as_deref()) {
                        urls.push(u.to_string());
                    }
                }
            }
            if m.content.is_empty() {
                for t in &m.thumbnails {
                    urls.push(t.image.uri.clone());
                }
            }
        }
        for l in &entry.links {
            let enclosure = l.rel.as_deref().is_none_or(|r| r == "enclosure");
            if enclosure
                && l.media_type.is_some()
                && looks_like_image(&l.href, l.media_type.as_deref())
            {
                urls.push(l.href.clone());
            }
        }
        urls.dedup();
        let caption = entry
            .title
            .as_ref()
            .map(|t| t.content.clone())
            .or_else(|| entry.summary.as_ref().map(|s| s.content.clone()))
            .map(|c| hashtale_types::capped_caption(&c));
        for (i, u) in urls.into_iter().enumerate() {
            let external_id = if i == 0 {
                entry.id.clone()
            } else {
                format!("{}#{}", entry.id, i + 1)
            };
            posts.push(NewPost {
                source: format!("feed:{source}"),
                source_kind: "feed".into(),
                external_id,
                image: ImageSource::Url(u),
                caption: caption.clone(),
            });
        }
    }
    Ok(posts)
}

/// Fetches a feed once (conditionally) and ingests its new posts; returns how many were new.
pub async fn poll_once(ing: &Ingestor, fetcher: &Fetcher, url: &str) -> Result<usize> {
    let parsed = fetcher.check(url)?;
    // The URL as logs and the source name show it: credentials in it are masked.
    let shown = redact_url(url);
    let url = shown.as_str();
    let source = format!("feed:{url}");
    let source_id = ing.store.source_id(&source, "feed").await?;
    let (etag, last_modified) = ing.store.feed_validators(source_id).await?;
    let mut req = fetcher.client().get(parsed);
    if let Some(e) = &etag {
        req = req.header(reqwest::header::IF_NONE_MATCH, e);
    }
    if let Some(l) = &last_modified {
        req = req.header(reqwest::header::IF_MODIFIED_SINCE, l);
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| Error::Transient(format!("feed {url}: {}", e.without_url())))?;
    if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(0);
    }
    if !resp.status().is_success() {
        return Err(Error::Transient(format!(
            "feed {url}: HTTP {}",
            resp.status()
        )));
    }
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let new_etag = header(reqwest::header::ETAG);
    let new_lm = header(reqwest::header::LAST_MODIFIED);
    let body = read_body_capped(&mut resp, MAX_FEED_BYTES as u64, "feed")
        .await
        .map_err(|e| match Error::from(e) {
            Error::BadInput(m) => Error::BadInput(format!("feed {url}: {m}")),
            other => other,
        })?;
    let posts = posts_from_feed(url, &body)?;
    let mut ingested = Vec::with_capacity(posts.len());
    for p in &posts {
        ingested.push(ing.ingest_only(p).await?);
    }
    // A job the broker cannot take now stays pending (published later): the posts are stored.
    ing.enqueue(&ingested).await;
    // Remember the validators only once every post is safely stored.
    ing.store
        .set_feed_validators(source_id, new_etag.as_deref(), new_lm.as_deref())
        .await?;
    Ok(ingested.iter().filter(|r| r.job_id.is_some()).count())
}

/// Polls `url` every `interval` until `cancel` (a poll in progress is finished first: its
/// posts committed and their jobs enqueued).
pub async fn poll_feed(
    ing: Ingestor,
    fetcher: Fetcher,
    url: String,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => match poll_once(&ing, &fetcher, &url).await {
                Ok(n) => tracing::info!("feed {}: {n} new posts", redact_url(&url)),
                Err(e) => tracing::warn!("feed {}: {e}", redact_url(&url)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_atom_and_json_feed_images() {
        let rss = br#"<?xml version="1.0"?><rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel><title>t</title>
<item><guid>a1</guid><title>Sunset</title><enclosure url="http://h/a.jpg" type="image/jpeg" length="1"/></item>
<item><guid>a2</guid><title>Text only</title></item>
<item><guid>a3</guid><media:content url="http://h/b.png" medium="image"/></item>
</channel></rss>"#;
        let posts = posts_from_feed("x", rss).unwrap();
        let ids: Vec<_> = posts.iter().map(|p| p.external_id.as_str()).collect();
        assert_eq!(ids, ["a1", "a3"]);
        assert_eq!(posts[0].image, ImageSource::Url("http://h/a.jpg".into()));
        assert_eq!(posts[0].caption.as_deref(), Some("Sunset"));

        let atom = br#"<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><id>f</id><updated>2024-01-01T00:00:00Z</updated>
<entry><id>e1</id><title>Cat</title><updated>2024-01-01T00:00:00Z</updated><link rel="enclosure" type="image/png" href="http://h/c.png"/><link rel="alternate" href="http://h/page"/></entry>
</feed>"#;
        let posts = posts_from_feed("y", atom).unwrap();
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0].image, ImageSource::Url("http://h/c.png".into()));

        let json = br#"{"version":"https://jsonfeed.org/version/1.1","title":"t","items":[
{"id":"j1","content_text":"Dog","attachments":[{"url":"http://h/d.webp","mime_type":"image/webp"},{"url":"http://h/e.mp3","mime_type":"audio/mpeg"}]}]}"#;
        let posts = posts_from_feed("z", json).unwrap();
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0].external_id, "j1");
        let json = br#"{"version":"https://jsonfeed.org/version/1.1","title":"t","items":[
{"id":"k1","content_text":"Owl","image":"http://h/owl.jpg"}]}"#;
        let posts = posts_from_feed("z", json).unwrap();
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0].image, ImageSource::Url("http://h/owl.jpg".into()));
        assert!(posts_from_feed("z", b"not a feed").is_err());
    }
}
