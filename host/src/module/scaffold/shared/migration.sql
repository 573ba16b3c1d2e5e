-- The {{name}} module's own data. Portable SQL: SQLite and Postgres.
CREATE TABLE notes (
    id BIGINT PRIMARY KEY,
    text TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
