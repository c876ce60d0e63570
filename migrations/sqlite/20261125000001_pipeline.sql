-- hashtale pipeline schema (SQLite, embedded mode). Same tables and columns as Postgres;
-- JSON is stored as TEXT, times as milliseconds since the Unix epoch.
CREATE TABLE sources (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL,
    etag          TEXT,
    last_modified TEXT,
    created_at    INTEGER NOT NULL
);

CREATE TABLE blobs (
    sha256     TEXT PRIMARY KEY,
    bytes      BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE posts (
    id           INTEGER PRIMARY KEY,
    source_id    INTEGER NOT NULL REFERENCES sources(id),
    external_id  TEXT NOT NULL,
    image_url    TEXT,
    image_sha256 TEXT REFERENCES blobs(sha256),
    caption      TEXT,
    first_seen   INTEGER NOT NULL,
    UNIQUE (source_id, external_id),
    CHECK (image_url IS NOT NULL OR image_sha256 IS NOT NULL)
);

CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY,
    post_id      INTEGER NOT NULL UNIQUE REFERENCES posts(id),
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    available_at INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER
);
CREATE INDEX jobs_state_available ON jobs (state, available_at, id);

CREATE TABLE model_versions (
    version    TEXT PRIMARY KEY,
    first_seen INTEGER NOT NULL
);

CREATE TABLE results (
    id            INTEGER PRIMARY KEY,
    post_id       INTEGER NOT NULL REFERENCES posts(id),
    job_id        INTEGER REFERENCES jobs(id),
    model_version TEXT NOT NULL REFERENCES model_versions(version),
    output        TEXT NOT NULL,
    story         TEXT,
    timings       TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    UNIQUE (post_id, model_version)
);
CREATE INDEX results_created ON results (created_at, id);

CREATE TABLE backfills (
    id         INTEGER PRIMARY KEY,
    key        TEXT NOT NULL UNIQUE,
    total      INTEGER NOT NULL,
    done       INTEGER NOT NULL DEFAULT 0,
    state      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
