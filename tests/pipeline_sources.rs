//! Sources without the models: feeds polled with ETag (a 304 reads nothing), feeds on refused
//! addresses, and a watched folder picking up files that appear later (once, even if rewritten).
mod pipeline_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use hashtale_core::config::FetchConfig;
use hashtale_core::fetch::Fetcher;
use hashtale_core::store::state;
use hashtale_scheduler::{dir, feed, Ingestor};
use pipeline_support::{jobs_in, png, rss, wait_until, Env};

#[tokio::test]
async fn feed_polling_is_conditional_and_dedups() {
    let env = Env::sqlite_local("feed").await;
    let full = Arc::new(AtomicUsize::new(0));
    let not_modified = Arc::new(AtomicUsize::new(0));
    let (f2, n2) = (full.clone(), not_modified.clone());
    let body = rss("http://images.example", &[1, 2, 3]);
    let app = axum::Router::new().route(
        "/feed.xml",
        axum::routing::get(move |headers: HeaderMap| {
            let (f2, n2, body) = (f2.clone(), n2.clone(), body.clone());
            async move {
                if headers
                    .get(header::IF_NONE_MATCH)
                    .and_then(|v| v.to_str().ok())
                    == Some("\"v1\"")
                {
                    n2.fetch_add(1, Ordering::SeqCst);
                    return StatusCode::NOT_MODIFIED.into_response();
                }
                f2.fetch_add(1, Ordering::SeqCst);
                (
                    [
                        (header::ETAG, "\"v1\""),
                        (header::CONTENT_TYPE, "application/rss+xml"),
                    ],
                    body,
                )
                    .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}/feed.xml");
    let ing = Ingestor::new(env.store.clone(), env.queue.clone());
    let fetcher = Fetcher::new(&env.cfg.fetch).unwrap();
    assert_eq!(feed::poll_once(&ing, &fetcher, &url).await.unwrap(), 3);
    assert_eq!(feed::poll_once(&ing, &fetcher, &url).await.unwrap(), 0);
    assert_eq!(
        (
            full.load(Ordering::SeqCst),
            not_modified.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    assert_eq!(jobs_in(&env.store, state::QUEUED).await, 3);
    let post = env.store.post(1).await.unwrap().unwrap();
    assert_eq!(
        post.image_url.as_deref(),
        Some("http://images.example/img/1.png")
    );
    assert_eq!(post.caption.as_deref(), Some("Photo 1"));

    // The same feed is refused when private addresses are not allowed.
    let strict = Fetcher::new(&FetchConfig::default()).unwrap();
    let err = feed::poll_once(&ing, &strict, &url).await.unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_folder_takes_existing_and_new_files_once() {
    let env = Env::postgres_rabbit("watch").await;
    let photos = env.dir.path().join("in");
    std::fs::create_dir_all(photos.join("sub")).unwrap();
    std::fs::write(photos.join("a.png"), png(1)).unwrap();
    std::fs::write(photos.join("notes.txt"), b"ignored: not an image name").unwrap();
    std::fs::write(photos.join(".hidden.png"), png(9)).unwrap();
    let ing = Ingestor::new(env.store.clone(), env.queue.clone());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(dir::watch_dir(ing, photos.clone(), 1 << 20, rx));
    wait_until(20, "the existing file", || async {
        env.store.count("posts").await.unwrap() == 1
    })
    .await;
    std::fs::write(photos.join("sub/b.jpg"), pipeline_support::jpeg(2)).unwrap();
    std::fs::write(photos.join("c.png"), png(3)).unwrap();
    wait_until(20, "the new files", || async {
        env.store.count("posts").await.unwrap() == 3
    })
    .await;
    // Rewriting a known file makes no new job.
    std::fs::write(photos.join("c.png"), png(4)).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(env.store.count("jobs").await.unwrap(), 3);
    let rabbit = env.queue.rabbit().unwrap().clone();
    assert_eq!(rabbit.depth(&rabbit.names.jobs).await.unwrap(), 3);
    assert_eq!(jobs_in(&env.store, state::QUEUED).await, 3);
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    env.cleanup().await;
}
