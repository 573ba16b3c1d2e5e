-- Messages to customers, one per event that calls for one. Portable SQL: SQLite and
-- Postgres. `event_id` is unique: the host delivers each event's effects once, and
-- this says so in the schema too. `seq` orders them as they were written (MAX + 1 in
-- the handler's transaction: one consumer writes at a time).
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL UNIQUE,
    event_id TEXT NOT NULL UNIQUE,
    order_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX notifications_by_order ON notifications (order_id);
