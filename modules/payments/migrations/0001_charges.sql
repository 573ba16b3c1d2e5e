-- Every charge attempt and its outcome: the payments ledger. SQLite and Postgres.
CREATE TABLE charges (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    currency TEXT NOT NULL,
    card_last4 TEXT NOT NULL,
    outcome TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX charges_by_order ON charges (order_id);
