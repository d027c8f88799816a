-- flashline records, SQLite flavour. The PostgreSQL set (migrations/postgres/) holds the same
-- tables, columns and constraints; only the integer and id types are spelled differently.
-- Timestamps are UTC ISO 8601 text with milliseconds ("2025-06-01T08:15:02.120Z") in both, so
-- the two backends sort, group and report identically.

CREATE TABLE stations (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    first_seen_at TEXT NOT NULL
);

CREATE TABLE programmers (
    id            INTEGER PRIMARY KEY,
    kind          TEXT NOT NULL,
    identity      TEXT NOT NULL,
    first_seen_at TEXT NOT NULL,
    UNIQUE (kind, identity)
);

CREATE TABLE recipes (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    sku           TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    first_seen_at TEXT NOT NULL,
    UNIQUE (name, sku, sha256)
);

CREATE TABLE units (
    id              INTEGER PRIMARY KEY,
    serial          TEXT NOT NULL UNIQUE,
    first_seen_at   TEXT NOT NULL,
    -- attempt counter: begin_attempt increments it under the row lock, so attempt numbers
    -- per unit are dense and never collide, whichever station writes.
    last_attempt_no INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE attempts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    unit_id       INTEGER NOT NULL REFERENCES units (id),
    attempt_no    INTEGER NOT NULL,
    recipe_id     INTEGER NOT NULL REFERENCES recipes (id),
    image_sha256  TEXT NOT NULL,
    station_id    INTEGER NOT NULL REFERENCES stations (id),
    slot          TEXT NOT NULL,
    programmer_id INTEGER NOT NULL REFERENCES programmers (id),
    operator      TEXT NOT NULL,
    result        TEXT NOT NULL CHECK (result IN ('running', 'pass', 'fail', 'error', 'interrupted')),
    failure_class TEXT,
    message       TEXT,
    signature     TEXT,
    fuses_before  TEXT,
    fuses_after   TEXT,
    lock_before   TEXT,
    lock_after    TEXT,
    bytes_written INTEGER,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    cycle_ms      INTEGER,
    serial_number INTEGER,
    UNIQUE (unit_id, attempt_no)
);
CREATE INDEX attempts_started_at ON attempts (started_at);
CREATE INDEX attempts_running ON attempts (station_id) WHERE result = 'running';

CREATE TABLE steps (
    id         INTEGER PRIMARY KEY,
    attempt_id INTEGER NOT NULL REFERENCES attempts (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    name       TEXT NOT NULL,
    ms         INTEGER NOT NULL,
    ok         BOOLEAN NOT NULL,
    detail     TEXT,
    UNIQUE (attempt_id, seq)
);

CREATE TABLE rejected_scans (
    id         INTEGER PRIMARY KEY,
    station_id INTEGER NOT NULL REFERENCES stations (id),
    slot       TEXT,
    raw        TEXT NOT NULL,
    reason     TEXT NOT NULL,
    at         TEXT NOT NULL
);

-- Serial-number pool per SKU: 'reserved' while a job holds it, 'used' once a passing attempt
-- consumed it, 'free' when released (handed out again before new numbers are minted).
CREATE TABLE serial_numbers (
    sku        TEXT NOT NULL,
    number     INTEGER NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('reserved', 'used', 'free')),
    attempt_id INTEGER REFERENCES attempts (id),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (sku, number)
);
CREATE INDEX serial_numbers_free ON serial_numbers (sku, number) WHERE state = 'free';
