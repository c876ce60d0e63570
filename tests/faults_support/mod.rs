//! What the service-fault tests share: a RabbitMQ and a Postgres of the test's own (own ports,
//! folders and node name, so stopping them never disturbs the machine's services), the
//! pipeline's three processes (`serve`, `scheduler`, `worker`), a minimal HTTP client, and the
//! scenario: posts before, during and after a fault, then every one must end `done` with
//! exactly one result.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use hashtale_types::JobState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::pipeline_support::{jobs_in, png, Env};

pub const TOKEN: &str = "fault-token";

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn port_open(port: u16) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// The first of `candidates` that is a file, then `name` on the PATH.
fn find_binary(name: &str, candidates: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    candidates
        .iter()
        .cloned()
        .chain(std::env::split_paths(&path).map(|d| d.join(name)))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn log_file(path: &Path) -> File {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// The last `n` bytes of a log file (for a failing test's output).
fn tail(path: &Path, n: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        use std::io::Seek;
        let _ = f.seek(std::io::SeekFrom::Start(len.saturating_sub(n)));
        let _ = f.read_to_string(&mut s);
    }
    s
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Waits for `child` to exit, at most `secs`; whether it did.
fn wait_exit(child: &mut Child, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A RabbitMQ node of the test's own: its own node name, AMQP and distribution ports, data and
/// log folders, config (no plugins), cookie (`HOME`). Stopped with SIGTERM (a clean broker
/// shutdown) and started again on the same data, so durable queues and messages survive as in
/// a real restart.
pub struct OwnRabbit {
    pub port: u16,
    dist_port: u16,
    node: String,
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnRabbit {
    /// Starts it and waits until it takes connections. Panics, saying so, when RabbitMQ is not
    /// installed: the test cannot run without it and must not pass silently.
    pub fn start() -> OwnRabbit {
        let bin = find_binary(
            "rabbitmq-server",
            &[PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server")],
        )
        .expect(
            "rabbitmq-server is not installed: this fault test starts a RabbitMQ of its own \
             (scripts/test.sh installs it)",
        );
        let dir = tempfile::tempdir().unwrap();
        let (port, dist_port) = (free_port(), free_port());
        let d = dir.path();
        std::fs::write(d.join("enabled_plugins"), "[].\n").unwrap();
        std::fs::write(d.join("rabbitmq-env.conf"), "").unwrap();
        std::fs::write(
            d.join("rabbitmq.conf"),
            format!("listeners.tcp.1 = 127.0.0.1:{port}\n"),
        )
        .unwrap();
        let mut r = OwnRabbit {
            port,
            dist_port,
            node: format!("ht_fault_{}_{port}@localhost", std::process::id()),
            bin,
            dir,
            child: None,
        };
        r.up();
        r
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Starts the node (on the same data as before) and waits until it takes connections.
    pub fn up(&mut self) {
        assert!(self.child.is_none(), "already running");
        let d = self.dir.path();
        let log = d.join("server.log");
        let child = Command::new(&self.bin)
            .current_dir(d)
            .env("HOME", d)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PID_FILE", d.join("rabbitmq.pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .stdin(Stdio::null())
            .stdout(log_file(&log))
            .stderr(log_file(&log))
            .spawn()
            .expect("starting rabbitmq-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(180);
        while !port_open(self.port) {
            let c = self.child.as_mut().unwrap();
            if let Some(status) = c.try_wait().unwrap() {
                panic!("rabbitmq-server exited ({status}):\n{}", tail(&log, 4000));
            }
            assert!(
                Instant::now() < deadline,
                "rabbitmq-server did not listen within 180 s:\n{}",
                tail(&log, 4000)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the node cleanly (SIGTERM, as a service manager does), waiting for it to exit.
    pub fn down(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), "-TERM");
        if !wait_exit(&mut child, 120) {
            // The script forwards SIGTERM to the VM; if that hangs, end the VM itself.
            if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("rabbitmq.pid")) {
                if let Ok(pid) = pid.trim().parse::<u32>() {
                    signal(pid, "-KILL");
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while port_open(self.port) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("server.log"), 3000)
    }
}

impl Drop for OwnRabbit {
    fn drop(&mut self) {
        self.down();
    }
}

/// A Postgres cluster of the test's own: `initdb` in a temporary folder (as the `postgres` OS
/// user when the test runs as root: initdb refuses root), served on its own port with its
/// socket in that folder.
pub struct OwnPostgres {
    pub port: u16,
    bin: PathBuf,
    as_postgres: bool,
    dir: tempfile::TempDir,
    running: bool,
}

impl OwnPostgres {
    /// Initialises and starts it. Panics, saying so, when Postgres' server binaries are missing.
    pub fn start() -> OwnPostgres {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|rd| rd.flatten().map(|e| e.path().join("bin/initdb")).collect())
            .unwrap_or_default();
        versions.sort_by_key(|p| {
            p.parent()
                .and_then(|b| b.parent())
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        });
        versions.reverse();
        let initdb = find_binary("initdb", &versions).expect(
            "initdb is not installed: this fault test starts a Postgres of its own \
             (scripts/test.sh installs it; binaries under /usr/lib/postgresql/*/bin)",
        );
        let bin = initdb.parent().unwrap().to_path_buf();
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown of the test's Postgres folder to postgres failed");
        }
        let pg = OwnPostgres {
            port: free_port(),
            bin,
            as_postgres,
            dir,
            running: false,
        };
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(pg.data())
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("running initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = pg;
        pg.up();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(program));
            c
        } else {
            Command::new(self.bin.join(program))
        };
        c.stdin(Stdio::null());
        c
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it takes connections.
    pub fn up(&mut self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "120", "-o", &opts, "start"])
            .output()
            .expect("running pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            self.log_tail()
        );
        self.running = true;
    }

    /// Stops the server (`fast`: clients are disconnected, open transactions rolled back).
    pub fn down(&mut self) {
        if !self.running {
            return;
        }
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "120", "stop"])
            .output()
            .expect("running pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.running = false;
    }

    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("server.log"), 3000)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

/// `hashtale serve`, `scheduler` (watching a folder) and `worker`, on the test's store and
/// broker. Their logs go to files, shown when the test fails.
pub struct Stack {
    procs: Vec<(&'static str, Child)>,
    pub api: SocketAddr,
    pub watch: PathBuf,
    logs: tempfile::TempDir,
}

impl Stack {
    pub fn start(env: &Env) -> Stack {
        let logs = tempfile::tempdir().unwrap();
        let watch = logs.path().join("watch");
        std::fs::create_dir(&watch).unwrap();
        let api: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut stack = Stack {
            procs: Vec::new(),
            api,
            watch,
            logs,
        };
        let api_arg = api.to_string();
        let watch_arg = stack.watch.display().to_string();
        for (name, args) in [
            ("serve", vec!["serve", "--listen", api_arg.as_str()]),
            (
                "scheduler",
                vec!["scheduler", "--watch", watch_arg.as_str()],
            ),
            ("worker", vec!["worker"]),
        ] {
            let log = stack.logs.path().join(format!("{name}.log"));
            let child = env
                .hashtale(&args)
                .env("HASHTALE__API__TOKEN", TOKEN)
                .env("RUST_LOG", "info")
                .stdout(log_file(&log))
                .stderr(log_file(&log))
                .spawn()
                .expect("starting hashtale");
            stack.procs.push((name, child));
        }
        stack
    }

    /// Panics if a process exited (none may: every one must ride out the fault).
    pub fn assert_alive(&mut self) {
        for (name, c) in &mut self.procs {
            if let Some(status) = c.try_wait().unwrap() {
                panic!(
                    "hashtale {name} exited ({status}):\n{}",
                    tail(&self.logs.path().join(format!("{name}.log")), 4000)
                );
            }
        }
    }

    /// Stops every process with SIGTERM; panics if one does not exit cleanly.
    pub fn stop(&mut self) {
        for (_, c) in &self.procs {
            signal(c.id(), "-TERM");
        }
        for (name, c) in &mut self.procs {
            assert!(wait_exit(c, 90), "hashtale {name} ignored SIGTERM");
            let status = c.wait().unwrap();
            assert!(status.success(), "hashtale {name} exited with {status}");
        }
        self.procs.clear();
    }

    /// Lines of a process's log that contain `needle`.
    pub fn log_lines(&self, name: &str, needle: &str) -> Vec<String> {
        std::fs::read_to_string(self.logs.path().join(format!("{name}.log")))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (_, c) in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        // HASHTALE_TEST_KEEP_LOGS=DIR keeps the processes' logs for a look afterwards.
        if let Some(keep) = std::env::var_os("HASHTALE_TEST_KEEP_LOGS") {
            let _ = std::fs::create_dir_all(&keep);
            for name in ["serve", "scheduler", "worker"] {
                let log = format!("{name}.log");
                let _ = std::fs::copy(self.logs.path().join(&log), Path::new(&keep).join(&log));
            }
        }
        if std::thread::panicking() {
            for name in ["serve", "scheduler", "worker"] {
                eprintln!(
                    "---- hashtale {name} (last lines) ----\n{}",
                    tail(&self.logs.path().join(format!("{name}.log")), 3000)
                );
            }
        }
    }
}

/// One HTTP/1.1 exchange (`Connection: close`); the status and the body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> std::io::Result<(u16, String)> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad response: {head}")))?;
        Ok((status, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .map_err(|_| std::io::Error::other("no answer within 60 s"))?
}

/// What the scenario saw.
#[derive(Debug, Default)]
pub struct Figures {
    pub posted_api: usize,
    pub posted_files: usize,
    /// Jobs done when the fault began (the rest were queued or in the worker's hands).
    pub done_at_fault: i64,
    /// Answers to `POST /v1/posts` by status (with `queued` for 202/200), retries included.
    pub answers: BTreeMap<String, usize>,
    pub done: i64,
    pub lost: i64,
    pub duplicated: i64,
    pub failed: i64,
    /// Attempts beyond the first, over all jobs (redeliveries after the fault: work done again,
    /// never a second result).
    pub reruns: i64,
    /// `/readyz` answered 503 while the service was away.
    pub not_ready_seen: bool,
    /// From the service being back to `/readyz` answering 200.
    pub ready_after: Duration,
    /// From the service being back to every job done.
    pub done_after: Duration,
}

/// A client's submission: retried (every 500 ms, for up to 5 min) until it gets a 2xx, as a
/// real client would; a 500 is recorded and fails the test.
async fn submit(api: SocketAddr, seed: u32, answers: &mut BTreeMap<String, usize>) {
    let body = serde_json::json!({
        "source": "faults",
        "external_id": format!("api-{seed}"),
        "image_base64": base64::engine::general_purpose::STANDARD.encode(png(seed)),
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let key = match http(api, "POST", "/v1/posts", Some(&body)).await {
            Ok((status, text)) => {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                let key = match v["queued"].as_bool() {
                    Some(q) => format!("{status} queued:{q}"),
                    None => status.to_string(),
                };
                *answers.entry(key).or_default() += 1;
                assert_ne!(status, 500, "POST /v1/posts answered 500: {text}");
                if (200..300).contains(&status) {
                    return;
                }
                continue_after(&deadline).await;
                continue;
            }
            Err(e) => format!("no answer ({e})"),
        };
        *answers.entry(key).or_default() += 1;
        continue_after(&deadline).await;
    }
}

async fn continue_after(deadline: &Instant) {
    assert!(Instant::now() < *deadline, "a post was never accepted");
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Drops a distinct PNG into the watched folder (written aside, then renamed in, as a copy
/// tool would).
fn drop_file(dir: &Path, seed: u32) {
    let tmp = dir.join(format!(".f{seed}.part"));
    std::fs::write(&tmp, png(seed)).unwrap();
    std::fs::rename(&tmp, dir.join(format!("f{seed}.png"))).unwrap();
}

async fn readyz(api: SocketAddr) -> Option<u16> {
    http(api, "GET", "/readyz", None).await.ok().map(|(s, _)| s)
}

/// The scenario around one fault: `down` stops the service, `up` starts it again `outage`
/// later (both blocking; they run off the runtime). Posts go in before the fault (while the worker is busy
/// with them), during it and after it, through the API and the watched folder; then every post
/// must have its job done and exactly one result.
pub async fn run<D, U>(env: &Env, stack: &mut Stack, outage: Duration, down: D, up: U) -> Figures
where
    D: FnOnce() + Send + 'static,
    U: FnOnce() + Send + 'static,
{
    const BEFORE: u32 = 24;
    const DURING: u32 = 8;
    const AFTER: u32 = 4;
    let mut f = Figures::default();
    let api = stack.api;
    let deadline = Instant::now() + Duration::from_secs(300);
    while readyz(api).await != Some(200) {
        stack.assert_alive();
        assert!(Instant::now() < deadline, "serve never got ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut seed = 0;
    let mut next_seed = || {
        seed += 1;
        seed
    };
    // Before: enough that the worker is still busy when the fault comes.
    for _ in 0..BEFORE {
        submit(api, next_seed(), &mut f.answers).await;
        f.posted_api += 1;
    }
    for _ in 0..BEFORE / 2 {
        drop_file(&stack.watch, 1000 + next_seed());
        f.posted_files += 1;
    }
    // The fault comes mid-run: once the worker has committed something, with more in hand.
    let before = (f.posted_api + f.posted_files) as i64;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        stack.assert_alive();
        f.done_at_fault = jobs_in(&env.store, JobState::Done).await;
        if f.done_at_fault > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the worker produced nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        f.done_at_fault < before,
        "the worker finished everything before the fault"
    );
    tokio::task::spawn_blocking(down).await.unwrap();
    // During: the API and the folder keep taking posts (the API retries what it must).
    let during: Vec<u32> = (0..DURING).map(|_| next_seed()).collect();
    let submitter = tokio::spawn(async move {
        let mut answers = BTreeMap::new();
        for s in during {
            submit(api, s, &mut answers).await;
        }
        answers
    });
    for _ in 0..DURING / 2 {
        drop_file(&stack.watch, 1000 + next_seed());
        f.posted_files += 1;
    }
    let t = Instant::now();
    while t.elapsed() < outage {
        if readyz(api).await == Some(503) {
            f.not_ready_seen = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stack.assert_alive();
    tokio::task::spawn_blocking(up).await.unwrap();
    let back = Instant::now();
    while readyz(api).await != Some(200) {
        stack.assert_alive();
        assert!(
            back.elapsed() < Duration::from_secs(120),
            "serve did not get ready again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f.ready_after = back.elapsed();
    for (k, n) in submitter.await.unwrap() {
        *f.answers.entry(k).or_default() += n;
    }
    f.posted_api += DURING as usize;
    // After.
    for _ in 0..AFTER {
        submit(api, next_seed(), &mut f.answers).await;
        f.posted_api += 1;
    }
    for _ in 0..AFTER / 2 {
        drop_file(&stack.watch, 1000 + next_seed());
        f.posted_files += 1;
    }
    let expected = (f.posted_api + f.posted_files) as i64;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        stack.assert_alive();
        let posts = env.store.count("posts").await.unwrap_or(-1);
        let done = jobs_in(&env.store, JobState::Done).await;
        if posts == expected && done == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every job done: {posts} of {expected} posts stored, {done} done, counts {:?}",
            env.store.job_counts().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    f.done_after = back.elapsed();
    // A duplicate that is still in flight would show up now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    f.done = jobs_in(&env.store, JobState::Done).await;
    f.failed = jobs_in(&env.store, JobState::Failed).await;
    let posts = env.store.count("posts").await.unwrap();
    f.lost = expected - f.done;
    let mut post_ids = Vec::new();
    let mut after = 0;
    loop {
        let page = env.store.results_page(0, after, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.id;
        post_ids.extend(page.iter().map(|r| r.post_id));
    }
    let distinct: std::collections::HashSet<i64> = post_ids.iter().copied().collect();
    f.duplicated = (post_ids.len() - distinct.len()) as i64;
    for &p in &distinct {
        if let Some(job) = env.store.job_for_post(p).await.unwrap() {
            f.reruns += (job.attempts - 1).max(0);
        }
    }
    assert_eq!(posts, expected, "posts stored");
    assert_eq!(distinct.len() as i64, expected, "posts with a result");
    stack.assert_alive();
    f
}
