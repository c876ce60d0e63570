//! Sources without the models: feeds polled with ETag (a 304 reads nothing), feeds on refused
//! addresses, and a watched folder picking up files that appear later (once, even if rewritten).
mod pipeline_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use hashtale_core::config::FetchConfig;
use hashtale_fetch::Fetcher;
use hashtale_scheduler::{dir, feed, Ingestor};
use hashtale_types::JobState;
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
    let ing = Ingestor::new(env.store.clone(), env.queue.clone(), &env.cfg.fetch).unwrap();
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
    assert_eq!(jobs_in(&env.store, JobState::Queued).await, 3);
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
    let ing = Ingestor::new(env.store.clone(), env.queue.clone(), &env.cfg.fetch).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(dir::watch_dir(ing, photos.clone(), 1 << 20, stop.clone()));
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
    assert_eq!(jobs_in(&env.store, JobState::Queued).await, 3);
    stop.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}

/// An idle watched folder leaves the database alone: the scheduler's own reads of the files
/// (inotify open/read/close events) must not ingest them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_watched_folder_makes_no_database_writes() {
    let env = Env::postgres_rabbit("idle_watch").await;
    let photos = env.dir.path().join("idle");
    std::fs::create_dir_all(&photos).unwrap();
    for i in 0..50u32 {
        std::fs::write(photos.join(format!("p{i:02}.png")), png(i)).unwrap();
    }
    let ing = Ingestor::new(env.store.clone(), env.queue.clone(), &env.cfg.fetch).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(dir::watch_dir(ing, photos.clone(), 1 << 20, stop.clone()));
    wait_until(30, "the 50 files", || async {
        env.store.count("posts").await.unwrap() == 50
    })
    .await;
    // Let the events of the initial reads arrive and settle.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let before = env.store.post_ids_drawn().await.unwrap().unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    let after = env.store.post_ids_drawn().await.unwrap().unwrap();
    assert_eq!(
        after - before,
        0,
        "an idle folder drew {} post ids in 10 s",
        after - before
    );
    assert_eq!(env.store.count("posts").await.unwrap(), 50);
    // A changed file is still taken.
    std::fs::write(photos.join("p00.png"), png(200)).unwrap();
    wait_until(20, "the changed file", || async {
        env.store.post_ids_drawn().await.unwrap().unwrap() > after
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}

/// A feed that never ends, sent chunked with no Content-Length: the scheduler stops reading at
/// the feed size cap instead of buffering it whole.
#[tokio::test]
async fn endless_chunked_feed_is_cut_at_the_cap() {
    let env = Env::sqlite_local("endless_feed").await;
    let app = axum::Router::new().route(
        "/endless.xml",
        axum::routing::get(|| async {
            let chunk = axum::body::Bytes::from(vec![b' '; 64 * 1024]);
            let stream =
                futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
            (
                [(header::CONTENT_TYPE, "application/rss+xml")],
                axum::body::Body::from_stream(stream),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}/endless.xml");
    let ing = Ingestor::new(env.store.clone(), env.queue.clone(), &env.cfg.fetch).unwrap();
    let fetcher = Fetcher::new(&env.cfg.fetch).unwrap();
    let rss_before = resident_kib();
    let started = std::time::Instant::now();
    let err = feed::poll_once(&ing, &fetcher, &url).await.unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "stopped at the cap, not at a timeout"
    );
    let grown = resident_kib().saturating_sub(rss_before);
    assert!(grown < 256 * 1024, "resident memory grew {grown} KiB");
    env.cleanup().await;
}

/// This process's resident set size (Linux), in KiB.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A feed URL with credentials (a password, a token in the query): the source name and the
/// errors carry them masked, never in clear.
#[tokio::test]
async fn feed_credentials_stay_out_of_source_names_and_errors() {
    let env = Env::sqlite_local("feed_creds").await;
    let body = rss("http://images.example", &[1]);
    let app = axum::Router::new().route(
        "/feed.xml",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/rss+xml")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let ing = Ingestor::new(env.store.clone(), env.queue.clone(), &env.cfg.fetch).unwrap();
    let fetcher = Fetcher::new(&env.cfg.fetch).unwrap();
    let url = format!("http://reader:pa55word@{addr}/feed.xml?access_token=t0ken42&page=1");
    assert_eq!(feed::poll_once(&ing, &fetcher, &url).await.unwrap(), 1);
    let post = env.store.post(1).await.unwrap().unwrap();
    assert!(
        !post.source.contains("pa55word") && !post.source.contains("t0ken42"),
        "{}",
        post.source
    );
    assert!(post.source.contains("page=1"), "{}", post.source);

    // A feed that cannot be reached: the error names it, masked.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = closed.local_addr().unwrap();
    drop(closed);
    let url = format!("http://reader:pa55word@{gone}/feed.xml?access_token=t0ken42");
    let err = feed::poll_once(&ing, &fetcher, &url)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&gone.to_string()), "{err}");
    assert!(
        !err.contains("pa55word") && !err.contains("t0ken42"),
        "{err}"
    );
    env.cleanup().await;
}
