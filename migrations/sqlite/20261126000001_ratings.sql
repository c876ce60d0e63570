-- Human ratings (issue 5), SQLite: the same tables and columns as Postgres.
-- Times are milliseconds since the Unix epoch, as in the pipeline schema.

-- A rater is known only by the SHA-256 of their invite token; revoked raters are kept so that
-- their answers still name them.
CREATE TABLE raters (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);

-- One row per result that can be rated. `taken` counts assignments that are open or answered
-- (never more than k: assignment is a conditional UPDATE on this row); skips and expiries give
-- the slot back. `confidence` is the model's top hashtag score, for sampling.
CREATE TABLE rating_slots (
    result_id     INTEGER PRIMARY KEY REFERENCES results(id),
    model_version TEXT NOT NULL,
    confidence    REAL NOT NULL,
    taken         INTEGER NOT NULL DEFAULT 0,
    CHECK (taken >= 0)
);
CREATE INDEX rating_slots_open ON rating_slots (taken, result_id);

-- A result shown to a rater. States: assigned (open), answered, skipped, expired (open for longer
-- than the assignment TTL; the slot went back to the pool). A rater meets a result at most once.
CREATE TABLE rating_assignments (
    id          INTEGER PRIMARY KEY,
    result_id   INTEGER NOT NULL REFERENCES results(id),
    rater_id    INTEGER NOT NULL REFERENCES raters(id),
    state       TEXT NOT NULL,
    assigned_at INTEGER NOT NULL,
    answered_at INTEGER,
    UNIQUE (result_id, rater_id)
);
-- At most one open item per rater, even with two tabs racing.
CREATE UNIQUE INDEX rating_assignments_one_open ON rating_assignments (rater_id) WHERE state = 'assigned';
CREATE INDEX rating_assignments_rater ON rating_assignments (rater_id, state, answered_at);
CREATE INDEX rating_assignments_open_age ON rating_assignments (state, assigned_at);

-- One row per answer: Q1 once per hashtag (item = position, hashtag = its text), Q2 and Q3 once
-- per story (item 0). Fixing a mis-click replaces the assignment's rows.
CREATE TABLE rating_answers (
    id            INTEGER PRIMARY KEY,
    assignment_id INTEGER NOT NULL REFERENCES rating_assignments(id),
    rater_id      INTEGER NOT NULL REFERENCES raters(id),
    result_id     INTEGER NOT NULL REFERENCES results(id),
    model_version TEXT NOT NULL,
    question      TEXT NOT NULL,
    item          INTEGER NOT NULL,
    hashtag       TEXT,
    value         INTEGER NOT NULL,
    answered_at   INTEGER NOT NULL,
    UNIQUE (rater_id, result_id, question, item)
);
CREATE INDEX rating_answers_version ON rating_answers (model_version, result_id);

-- Server-side secrets shared by every API instance (the CSRF and admin-session HMAC key).
CREATE TABLE rating_secrets (
    name       TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
