-- Confirmed orders and their lines. Portable SQL: SQLite and Postgres.
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    customer_id BIGINT NOT NULL,
    status TEXT NOT NULL,
    total_cents BIGINT NOT NULL,
    currency TEXT NOT NULL,
    reservation_id TEXT NOT NULL,
    receipt_id TEXT NOT NULL,
    card_last4 TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE order_lines (
    order_id TEXT NOT NULL REFERENCES orders (id),
    position BIGINT NOT NULL,
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    unit_price_cents BIGINT NOT NULL,
    PRIMARY KEY (order_id, sku)
);
