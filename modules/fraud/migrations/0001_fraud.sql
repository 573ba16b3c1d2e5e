-- The fraud module's data. Portable SQL: SQLite and Postgres.

-- One row per order assessed: the score, the verdict and why (`reasons`, a JSON list).
CREATE TABLE assessments (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    customer_id BIGINT NOT NULL,
    total_cents BIGINT NOT NULL,
    currency TEXT NOT NULL,
    score INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    reasons TEXT NOT NULL,
    assessed_at BIGINT NOT NULL
);
CREATE INDEX assessments_customer ON assessments (customer_id);

-- What the module has learnt about a customer from events: charges that did not settle.
CREATE TABLE customer_history (
    customer_id BIGINT PRIMARY KEY,
    failed_settlements INTEGER NOT NULL
);

-- Charges already counted, so a redelivered `payments.failed` counts once.
CREATE TABLE counted_failures (
    receipt_id TEXT PRIMARY KEY
);

-- Mail domains that hand out throwaway addresses.
CREATE TABLE disposable_domains (
    domain TEXT PRIMARY KEY
);
INSERT INTO disposable_domains (domain) VALUES
    ('mailinator.com'),
    ('guerrillamail.com'),
    ('10minutemail.com'),
    ('trashmail.com'),
    ('yopmail.com');
