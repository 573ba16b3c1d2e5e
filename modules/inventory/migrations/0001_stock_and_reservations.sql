-- Stock levels and the reservations that hold stock for orders.
-- Portable SQL: the same file migrates SQLite and Postgres.
CREATE TABLE stock (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    available BIGINT NOT NULL CHECK (available >= 0),
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents >= 0)
);

CREATE TABLE reservations (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('held', 'released')),
    total_cents BIGINT NOT NULL
);

CREATE TABLE reservation_lines (
    reservation_id TEXT NOT NULL REFERENCES reservations (id),
    sku TEXT NOT NULL REFERENCES stock (sku),
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_cents BIGINT NOT NULL,
    PRIMARY KEY (reservation_id, sku)
);

INSERT INTO stock (sku, name, available, unit_price_cents) VALUES
    ('KB-001', 'Mechanical keyboard', 50, 8900),
    ('MS-002', 'Wireless mouse', 120, 2900),
    ('MN-003', '27-inch monitor', 5, 24900),
    ('CB-004', 'USB-C cable', 500, 900);
