-- What the probe published (in the same transactions as its events) and what its
-- handler did (in the same transactions as the host's inbox records). `seq` is the
-- order of writing: MAX + 1 inside the writing transaction, on SQLite and Postgres.
CREATE TABLE published (
    seq BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    payload TEXT NOT NULL
);

CREATE TABLE effects (
    seq BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    payload TEXT NOT NULL,
    source TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    headers TEXT NOT NULL
);
