-- The products the shop sells. Portable SQL: SQLite and Postgres.
CREATE TABLE products (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    category TEXT NOT NULL,
    price_cents BIGINT NOT NULL CHECK (price_cents > 0),
    currency TEXT NOT NULL
);

INSERT INTO products (sku, name, category, price_cents, currency) VALUES
    ('KB-001', 'Mechanical keyboard', 'peripherals', 8900, 'EUR'),
    ('MS-002', 'Wireless mouse', 'peripherals', 2900, 'EUR'),
    ('MN-003', '27-inch monitor', 'displays', 24900, 'EUR'),
    ('CB-004', 'USB-C cable', 'cables', 900, 'EUR');
