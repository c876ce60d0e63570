//! The rating page in a real headless Chromium (Debian's `chromium` and `chromium-driver`), driven
//! over WebDriver: open an invite link, answer with the keyboard only (arrows, number keys, Enter),
//! check the stored rows; then fix a mis-click on the previous item, again by keyboard.
//!
//! This test fails (it does not skip) when chromedriver or Chromium is missing:
//! `apt-get install -y chromium chromium-driver`.
mod ratings_support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder};
use ratings_support::{insert_result, output, Env};
use serde_json::json;

const INSTALL: &str = "the Chromium test needs Debian's chromium and chromium-driver: \
                       apt-get install -y chromium chromium-driver \
                       (or set CHROMEDRIVER and CHROME_BIN to their paths)";

/// An executable named `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn chromedriver() -> PathBuf {
    std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| on_path("chromedriver"))
        .unwrap_or_else(|| panic!("chromedriver not found; {INSTALL}"))
}

fn chrome() -> PathBuf {
    std::env::var_os("CHROME_BIN")
        .map(PathBuf::from)
        .or_else(|| on_path("chromium"))
        .or_else(|| on_path("chromium-browser"))
        .or_else(|| on_path("google-chrome"))
        .unwrap_or_else(|| panic!("Chromium not found; {INSTALL}"))
}

/// Starts chromedriver on a free port; it is killed when the child is dropped.
async fn start_chromedriver() -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(chromedriver())
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting chromedriver: {e}; {INSTALL}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, format!("http://127.0.0.1:{port}"))
}

async fn browser(webdriver: &str) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chrome(),
            // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1200,900"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(webdriver)
        .await
        .unwrap_or_else(|e| panic!("opening a Chromium session: {e}; {INSTALL}"))
}

/// Presses (down, up) each key in turn, sent to whatever has the focus.
async fn press(c: &Client, keys: &[char]) {
    for &k in keys {
        let actions = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: k })
            .then(KeyAction::Up { value: k });
        c.perform_actions(actions).await.unwrap();
    }
}

/// `id` (or data-index) of the focused element.
async fn focused(c: &Client) -> String {
    c.execute(
        "const e = document.activeElement; return e ? (e.id || e.name || e.tagName) : null;",
        vec![],
    )
    .await
    .unwrap()
    .as_str()
    .unwrap_or("")
    .to_string()
}

async fn wait_for_text(c: &Client, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let src = c.source().await.unwrap();
        if src.contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "page never showed {text:?}: {src}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_rating_in_chromium() {
    // Fail early and clearly if the browser is missing, before any setup.
    chromedriver();
    chrome();
    let env = Env::sqlite("browser").await;
    let store = env.store.clone();
    let result = insert_result(
        &store,
        7,
        "v-browser",
        output(
            &[("beach", 0.8), ("sea", 0.6), ("dog", 0.2)],
            Some("We walked along the shore until the lights came on."),
        ),
    )
    .await;
    let (rater, token) = hashtale_api::ratings::add_rater(&store, "keyboard rater")
        .await
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = env.cfg.clone();
    cfg.api.listen = addr.to_string();
    let state = hashtale_api::AppState::new(store.clone(), env.queue().await, &cfg).unwrap();
    let app = hashtale_api::router(state, 1 << 20);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let link = hashtale_api::ratings::invite_link(&cfg, &token);
    assert_eq!(link, format!("http://{addr}/rate/{token}"));

    let (_driver, webdriver) = start_chromedriver().await;
    let c = browser(&webdriver).await;
    c.goto(&link).await.unwrap();
    wait_for_text(&c, "Rate this result").await;

    // Screen-reader basics: every control has a label, the image has alt text, rate.js loaded
    // (the CSP allows it) and the first hashtag has the focus.
    let unlabelled = c
        .execute(
            "return Array.from(document.querySelectorAll('input:not([type=hidden]), button'))\
               .filter(e => e.tagName === 'INPUT' ? e.labels.length === 0 : !e.textContent.trim())\
               .map(e => e.name || e.id);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(unlabelled, json!([]), "controls without a label");
    let alt = c
        .execute("return document.getElementById('picture').alt;", vec![])
        .await
        .unwrap();
    assert!(!alt.as_str().unwrap().is_empty());
    let loaded = c
        .execute(
            "const i = document.getElementById('picture'); return i.complete && i.naturalWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        loaded,
        json!(56),
        "the image loads through the rater's image route"
    );
    assert_eq!(focused(&c).await, "q1_0");

    let attn_hidden = |i: usize| {
        let c = c.clone();
        async move {
            c.execute(
                &format!("return document.getElementById('attn-{i}').hidden;"),
                vec![],
            )
            .await
            .unwrap()
        }
    };
    // Focus on hashtag 0 shows its attention map (and only that one).
    assert_eq!(attn_hidden(0).await, json!(false));
    assert_eq!(attn_hidden(1).await, json!(true));

    // #beach: 1 (yes) → moves to #sea; ↑ back to #beach; ↓ to #sea; 0 (no) → #dog; 1 (yes) → Q2.
    press(&c, &['1']).await;
    assert_eq!(focused(&c).await, "q1_1");
    assert_eq!(attn_hidden(1).await, json!(false));
    press(&c, &[Key::Up.into()]).await;
    assert_eq!(focused(&c).await, "q1_0");
    press(&c, &[Key::Down.into(), '0', '1']).await;
    assert_eq!(focused(&c).await, "q2");
    // Q2: 3 (clear context) → Q3: 2 (slightly) → Submit; Enter submits.
    press(&c, &['3', '2']).await;
    assert_eq!(focused(&c).await, "submit");
    press(&c, &[Key::Enter.into()]).await;
    wait_for_text(&c, "All done").await;

    let rows = store.rating_rows(None).await.unwrap();
    let got: Vec<(String, i32, Option<String>, i32)> = rows
        .iter()
        .map(|r| (r.question.clone(), r.item, r.hashtag.clone(), r.value))
        .collect();
    assert_eq!(
        got,
        vec![
            ("q1".into(), 0, Some("beach".into()), 1),
            ("q1".into(), 1, Some("sea".into()), 0),
            ("q1".into(), 2, Some("dog".into()), 1),
            ("q2".into(), 0, None, 2),
            ("q3".into(), 0, None, 1),
        ]
    );
    assert!(rows.iter().all(|r| r.rater_id == rater.id
        && r.rater_name == "keyboard rater"
        && r.result_id == result
        && r.model_version == "v-browser"));

    // Fix a mis-click on the previous item: #dog was not relevant. Enter on a form field submits.
    c.goto(&format!("{link}/previous")).await.unwrap();
    wait_for_text(&c, "Change your previous answers").await;
    assert_eq!(focused(&c).await, "q1_0");
    press(&c, &[Key::Down.into(), Key::Down.into(), '0']).await;
    assert_eq!(
        focused(&c).await,
        "q2",
        "the prefilled Q2 answer takes the focus"
    );
    press(&c, &[Key::Enter.into()]).await;
    wait_for_text(&c, "All done").await;
    let dog: Vec<i32> = store
        .rating_rows(None)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.hashtag.as_deref() == Some("dog"))
        .map(|r| r.value)
        .collect();
    assert_eq!(dog, vec![0]);
    assert_eq!(store.rating_rows(None).await.unwrap().len(), 5);

    c.close().await.unwrap();
    env.cleanup().await;
}
