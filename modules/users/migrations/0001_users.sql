-- People who can sign in and place orders. Portable SQL: SQLite and Postgres.
CREATE TABLE users (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL
);

-- One account per address, whatever its case.
CREATE UNIQUE INDEX users_email_unique ON users (lower(email));

INSERT INTO users (id, name, email) VALUES
    (1, 'Ada Lovelace', 'ada@example.com'),
    (2, 'Grace Hopper', 'grace@example.com'),
    (3, 'Edsger Dijkstra', 'edsger@example.com');
