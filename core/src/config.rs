//! Configuration: built-in defaults, then an optional TOML file, then `HASHTALE__SECTION__KEY`
//! environment variables (CLI flags are applied by the binary on top).
//!
//! Every key has a default so that `hashtale run` works with no configuration at all.
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use hashtale_fetch::FetchConfig;

use crate::{Error, Result};

/// A secret from the configuration (a token, a signing key), held in a
/// `secrecy::SecretString`: `Debug` shows `[REDACTED]`, serialising writes `********` (so
/// `config show` and any log of the config never carry it) and the memory is zeroed on drop.
/// The value is read only where it is used, with [`Secret::expose`].
#[derive(Clone, Default)]
pub struct Secret(Option<SecretString>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        let v: String = value.into();
        Self((!v.is_empty()).then(|| SecretString::from(v)))
    }

    /// The secret itself (empty when unset).
    pub fn expose(&self) -> &str {
        self.0.as_ref().map_or("", |s| s.expose_secret())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_empty() {
            "\"\""
        } else {
            "[REDACTED]"
        })
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.expose().as_bytes().ct_eq(other.expose().as_bytes()))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(if self.is_empty() { "" } else { MASK })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Self::new(String::deserialize(d)?))
    }
}

/// What a masked secret reads as.
const MASK: &str = "********";

/// The whole configuration, one section per component.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub queue: QueueConfig,
    pub worker: WorkerConfig,
    pub fetch: FetchConfig,
    pub scheduler: SchedulerConfig,
    pub api: ApiConfig,
    pub ratings: RatingsConfig,
    pub metrics: MetricsConfig,
    pub models: ModelsConfig,
}

/// The Prometheus `/metrics` endpoint that every long-running command serves on its own port.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MetricsConfig {
    /// Address to listen on; empty: the command's own default ([`MetricsConfig::DEFAULTS`]);
    /// `off`: no metrics endpoint.
    pub listen: String,
}

impl MetricsConfig {
    /// Default metrics addresses per command, distinct so they can share a host.
    pub const DEFAULTS: [(&'static str, &'static str); 4] = [
        ("run", "127.0.0.1:9100"),
        ("worker", "127.0.0.1:9101"),
        ("scheduler", "127.0.0.1:9102"),
        ("serve", "127.0.0.1:9103"),
    ];

    /// The address `command` serves its metrics on, or `None` when they are off.
    pub fn listen_for(&self, command: &str) -> Option<String> {
        match self.listen.trim() {
            "off" => None,
            "" => Self::DEFAULTS
                .iter()
                .find(|(c, _)| *c == command)
                .map(|(_, a)| a.to_string()),
            a => Some(a.to_string()),
        }
    }
}

/// Where results live: `postgres://…` in production, `sqlite://FILE` embedded.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
    /// Postgres only: schema to use (created if missing); empty for the default search path.
    pub schema: String,
    /// Apply pending migrations when a component starts.
    pub migrate_on_start: bool,
}

/// Which queue carries jobs, and how failures are retried.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct QueueConfig {
    /// `rabbitmq` (production) or `local` (in-process, backed by the jobs table).
    pub kind: QueueKind,
    pub amqp_url: String,
    /// Prefix of every exchange and queue name: `{prefix}.jobs`, `{prefix}.retry.{delay}ms`,
    /// `{prefix}.dead`, `{prefix}.ingest` and the `{prefix}.results` exchange.
    pub prefix: String,
    /// Attempts per job before it is parked in the dead-letter queue.
    pub max_attempts: u32,
    /// First retry delay; doubled on every further attempt.
    pub retry_backoff_ms: u64,
}

// Debug by hand for the sections with URLs: a password in a URL is shown masked.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &mask_url_password(&self.url))
            .field("max_connections", &self.max_connections)
            .field("schema", &self.schema)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

impl std::fmt::Debug for QueueConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueConfig")
            .field("kind", &self.kind)
            .field("amqp_url", &mask_url_password(&self.amqp_url))
            .field("prefix", &self.prefix)
            .field("max_attempts", &self.max_attempts)
            .field("retry_backoff_ms", &self.retry_backoff_ms)
            .finish()
    }
}

/// The two queue implementations.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    Rabbitmq,
    Local,
}

/// Dynamic batching and result delivery.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct WorkerConfig {
    /// Most images in one model batch.
    pub batch_size: usize,
    /// Longest wait for a batch to fill once its first job arrived.
    pub max_wait_ms: u64,
    /// Images fetched and decoded at once.
    pub fetch_concurrency: usize,
    /// Longest a batch waits for its slowest fetches: once this has passed since its fetches
    /// began, the batch goes on with the images that are ready, and the late ones go on
    /// fetching (up to `fetch.timeout_ms`) to join a later batch or fail on their own.
    pub fetch_wait_ms: u64,
    /// Batches in the model at once: their stories share the story engine's steps (up to its
    /// 64 slots), which is what makes batching pay for the story model.
    pub batches_in_flight: usize,
    /// Optional URL POSTed with every result (body signed with `webhook_secret`).
    pub webhook_url: String,
    pub webhook_secret: Secret,
}

/// Where the models' files are, and which taggers rank the hashtags. The binary resolves this
/// section once (empty paths: under `assets`) and hands the paths to the models.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ModelsConfig {
    /// Folder holding `encoder/`, `tags/`, `concepts/`, `story-subword/`, `hashtags/` and
    /// `samples/` (and the other story models, `story/` and `story-plain/`).
    /// Empty: `$HASHTALE_ASSETS`, else `./assets` when it exists, else the source checkout's
    /// `assets/` (the Docker image sets `HASHTALE_ASSETS=/app/assets`).
    pub assets: String,
    /// Folder of the encoder weights and ImageNet class names; empty: `{assets}/encoder`.
    pub encoder_dir: String,
    /// Hashtag model directory; empty: `{assets}/tags`. The model's `encoder` field picks the
    /// encoder: `assets/tags-lite2` runs EfficientNet-Lite2.
    pub tag_model: String,
    /// ImageNet class → hashtag table; empty: `{assets}/concepts/concepts.tsv`.
    pub concepts: String,
    /// Story model: a char/subword LSTM checkpoint directory or a llama2.c `.bin` checkpoint;
    /// empty: the shipped hashtag-conditioned subword model `{assets}/story-subword`.
    /// `assets/story` is the hashtag-conditioned char-LSTM (the default before 2026-12-05) and
    /// `assets/story-plain` the plain char-LSTM (the seed's method), for comparisons.
    pub story_model: String,
    /// Tokenizer of a llama2.c `story_model` (a `.bin` file); empty: the `tokenizer.bin` or
    /// single `tok*.bin` beside the checkpoint.
    pub story_tokenizer: String,
    /// Instagram co-occurrence statistics (a file or folder); empty: `{assets}/hashtags`.
    pub hashtag_stats: String,
    /// Which taggers rank the content hashtags: `fused` (decoder + concept hashtags + the
    /// model's linear probe), `decoder`, `concepts` or `probe`.
    pub tag_source: String,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            assets: String::new(),
            encoder_dir: String::new(),
            tag_model: String::new(),
            concepts: String::new(),
            story_model: String::new(),
            story_tokenizer: String::new(),
            hashtag_stats: String::new(),
            tag_source: "fused".into(),
        }
    }
}

/// Sources polled or watched by the scheduler.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SchedulerConfig {
    pub watch_dirs: Vec<PathBuf>,
    pub feeds: Vec<String>,
    pub feed_interval_s: u64,
    /// Consume `{prefix}.ingest` JSON messages (RabbitMQ only).
    pub ingest: bool,
}

/// The HTTP API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ApiConfig {
    pub listen: String,
    /// Bearer token for write routes; empty means writes are refused (except in `hashtale run`,
    /// which generates one and prints it).
    pub token: Secret,
    pub max_upload_bytes: usize,
}

/// Human ratings (docs/ratings.md): assignment, sampling, admin access and the questions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RatingsConfig {
    /// Distinct raters per result.
    pub k: u32,
    /// Token for `/admin/ratings` and the exports; empty: `api.token` is used (none: disabled).
    pub admin_token: Secret,
    /// Public base URL of the API for invite links; empty: `http://{api.listen}`.
    pub public_url: String,
    /// An item left open this long goes back to the pool (0: never).
    pub assignment_ttl_s: u64,
    /// Offer results whose top hashtag scored lowest first.
    pub favour_low_confidence: bool,
    /// Offer results of this model version first (empty: no preference).
    pub prefer_model_version: String,
    /// Wording and answer labels of the three questions (`[ratings.questions.q2] text = …`).
    pub questions: hashtale_ratings::QuestionSet,
}

impl Default for RatingsConfig {
    fn default() -> Self {
        Self {
            k: 3,
            admin_token: Secret::default(),
            public_url: String::new(),
            assignment_ttl_s: 24 * 3600,
            favour_low_confidence: false,
            prefer_model_version: String::new(),
            questions: hashtale_ratings::QuestionSet::default(),
        }
    }
}

impl RatingsConfig {
    /// The admin token in force: `admin_token`, else the API token (`None`: admin is disabled).
    pub fn effective_admin_token<'a>(&'a self, api: &'a ApiConfig) -> Option<&'a str> {
        [self.admin_token.expose(), api.token.expose()]
            .into_iter()
            .find(|t| !t.is_empty())
    }

    /// Base URL of invite links, without a trailing slash.
    pub fn base_url(&self, api: &ApiConfig) -> String {
        if self.public_url.is_empty() {
            format!("http://{}", api.listen)
        } else {
            self.public_url.trim_end_matches('/').to_string()
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://hashtale.db".into(),
            max_connections: 8,
            schema: String::new(),
            migrate_on_start: true,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            kind: QueueKind::Rabbitmq,
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            prefix: "hashtale".into(),
            max_attempts: 3,
            retry_backoff_ms: 1000,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            batch_size: 8,
            max_wait_ms: 50,
            fetch_concurrency: 8,
            fetch_wait_ms: 500,
            batches_in_flight: 4,
            webhook_url: String::new(),
            webhook_secret: Secret::default(),
        }
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            watch_dirs: Vec::new(),
            feeds: Vec::new(),
            feed_interval_s: 300,
            ingest: true,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            token: Secret::default(),
            max_upload_bytes: 20 * 1024 * 1024,
        }
    }
}

impl Config {
    /// Defaults, overlaid by `file` (if given; it must exist) and by `HASHTALE__…` variables,
    /// e.g. `HASHTALE__DATABASE__URL` or `HASHTALE__WORKER__BATCH_SIZE`.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let defaults = config::Config::try_from(&Config::default())
            .map_err(|e| Error::Config(e.to_string()))?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("HASHTALE")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("scheduler.watch_dirs")
                .with_list_parse_key("scheduler.feeds")
                .with_list_parse_key("fetch.allow_private_hosts")
                .try_parsing(true),
        );
        let mut cfg: Config = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| Error::Config(e.to_string()))?;
        // `HASHTALE__SCHEDULER__FEEDS=""` means no feeds, not one empty feed.
        cfg.scheduler.feeds.retain(|f| !f.trim().is_empty());
        cfg.scheduler
            .watch_dirs
            .retain(|d| !d.as_os_str().is_empty());
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects values that would only fail later and more obscurely.
    pub fn validate(&self) -> Result<()> {
        if self.worker.batch_size == 0 {
            return Err(Error::Config("worker.batch_size must be at least 1".into()));
        }
        if self.queue.max_attempts == 0 {
            return Err(Error::Config(
                "queue.max_attempts must be at least 1".into(),
            ));
        }
        if !(self.database.url.starts_with("postgres://")
            || self.database.url.starts_with("postgresql://")
            || self.database.url.starts_with("sqlite:"))
        {
            return Err(Error::Config(
                "database.url must start with postgres:// or sqlite:".into(),
            ));
        }
        if self.ratings.k == 0 {
            return Err(Error::Config("ratings.k must be at least 1".into()));
        }
        // An empty key would sign every webhook body with a key anyone can reproduce.
        if !self.worker.webhook_url.is_empty() && self.worker.webhook_secret.is_empty() {
            return Err(Error::Config(
                "worker.webhook_url needs worker.webhook_secret (the key that signs each body)"
                    .into(),
            ));
        }
        self.ratings
            .questions
            .check()
            .map_err(|e| Error::Config(format!("ratings.questions: {e}")))?;
        Ok(())
    }

    /// A copy safe to print: passwords in URLs, the API token and the webhook secret masked.
    pub fn masked(&self) -> Self {
        let mut c = self.clone();
        c.database.url = mask_url_password(&c.database.url);
        c.queue.amqp_url = mask_url_password(&c.queue.amqp_url);
        c.worker.webhook_url = mask_url_password(&c.worker.webhook_url);
        for feed in &mut c.scheduler.feeds {
            *feed = mask_url_password(feed);
        }
        // The tokens and the webhook secret are `Secret`s: they serialise masked.
        c
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> Result<String> {
        toml::to_string_pretty(&self.masked()).map_err(|e| Error::Config(e.to_string()))
    }
}

/// Replaces the password of `scheme://user:password@host/…` with asterisks.
pub fn mask_url_password(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some(MASK));
            u.to_string()
        }
        _ => raw.to_string(),
    }
}

/// A URL as it may be shown in logs and stored in source names: the password masked, and the
/// values of query parameters that look like credentials (`token`, `key`, `secret`,
/// `password`, `auth`, `sig`, …) masked too.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut u) = url::Url::parse(raw) else {
        return raw.to_string();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some(MASK));
    }
    if u.query().is_some() {
        const SECRET_KEYS: [&str; 9] = [
            "token",
            "key",
            "secret",
            "pass",
            "auth",
            "sig",
            "credential",
            "session",
            "code",
        ];
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let lower = k.to_ascii_lowercase();
                let secret = SECRET_KEYS.iter().any(|s| lower.contains(s));
                let v = if secret {
                    MASK.to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials_in_urls() {
        let r =
            redact_url("https://bob:hunter2@feeds.example.com/a.rss?api_key=k3y&page=2&Token=t0k");
        assert!(
            !r.contains("hunter2") && !r.contains("k3y") && !r.contains("t0k"),
            "{r}"
        );
        assert!(r.contains("bob:") && r.contains("page=2"), "{r}");
        assert_eq!(
            redact_url("https://example.com/a.rss"),
            "https://example.com/a.rss"
        );
    }

    #[test]
    fn masks_secrets() {
        let mut c = Config::default();
        c.database.url = "postgres://app:hunter2@db:5432/hashtale".into();
        c.api.token = "tok".into();
        let shown = c.to_masked_toml().unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("\"tok\""), "{shown}");
        assert!(shown.contains("app:********@db"), "{shown}");
        // amqp default has guest:guest: masked too.
        assert!(!shown.contains("guest:guest"), "{shown}");
        c.ratings.admin_token = "adm1n".into();
        assert!(!c.to_masked_toml().unwrap().contains("adm1n"));
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let mut c = Config::default();
        c.api.token = "tok-4f9d2c".into();
        c.worker.webhook_url = "https://hooks.example.com/h".into();
        c.worker.webhook_secret = "hook-8e1a".into();
        c.ratings.admin_token = "adm-77b3".into();
        c.database.url = "postgres://app:pw-db-91@db/h".into();
        c.queue.amqp_url = "amqp://app:pw-mq-23@mq:5672/%2f".into();
        let shown = format!("{c:?} {c:#?}");
        for secret in [
            "tok-4f9d2c",
            "hook-8e1a",
            "adm-77b3",
            "pw-db-91",
            "pw-mq-23",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("[REDACTED]"), "{shown}");
        // The values are still there for the code that uses them.
        assert_eq!(c.api.token.expose(), "tok-4f9d2c");
        assert_eq!(c.ratings.effective_admin_token(&c.api), Some("adm-77b3"));
    }

    #[test]
    fn secrets_load_from_the_environment_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.toml");
        std::fs::write(&path, "[api]\ntoken = \"from-file\"\n").unwrap();
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.api.token.expose(), "from-file");
        assert!(c.worker.webhook_secret.is_empty());
    }

    #[test]
    fn a_webhook_needs_a_secret() {
        let mut c = Config::default();
        c.worker.webhook_url = "https://hooks.example.com/h".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("webhook_secret"), "{err}");
        c.worker.webhook_secret = "s3cret".into();
        c.validate().unwrap();
    }

    #[test]
    fn ratings_section_overrides_wording_and_checks_scales() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.toml");
        std::fs::write(
            &path,
            "[ratings]\nk = 5\n[ratings.questions.q2]\ntext = \"Is there a context?\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.ratings.k, 5);
        assert_eq!(c.ratings.questions.q2.text, "Is there a context?");
        // Untouched parts keep their defaults.
        assert_eq!(c.ratings.questions.q2.scale.labels.len(), 3);
        assert_eq!(
            c.ratings.questions.q1,
            hashtale_ratings::QuestionSet::default().q1
        );
        std::fs::write(
            &path,
            "[ratings.questions.q3.scale]\nlabels = [\"a\", \"b\"]\n",
        )
        .unwrap();
        let e = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("ratings.questions"), "{e}");
        std::fs::write(&path, "[ratings]\nk = 0\n").unwrap();
        assert!(Config::load(Some(&path)).is_err());
    }

    #[test]
    fn file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.toml");
        std::fs::write(
            &path,
            "[worker]\nbatch_size = 4\n[database]\nurl = \"postgres://x@h/db\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.worker.batch_size, 4);
        assert_eq!(c.worker.max_wait_ms, 50);
        assert_eq!(c.database.url, "postgres://x@h/db");
        assert!(Config::load(Some(&dir.path().join("missing.toml"))).is_err());
    }
}
