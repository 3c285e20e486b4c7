-- The inbox of consumers: the same rule as on PostgreSQL. A consumer inserts
-- (consumer, event_id) in the transaction of its effect; the primary key makes
-- a second delivery of the event a conflict. Times are Unix milliseconds.
CREATE TABLE outbox_inbox (
    consumer   TEXT    NOT NULL CHECK (consumer <> '' AND length(consumer) <= 200),
    event_id   TEXT    NOT NULL,
    stream     TEXT,
    key        TEXT    NOT NULL,
    seq        INTEGER,
    event_type TEXT    NOT NULL,
    handled_at INTEGER NOT NULL
               DEFAULT (CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER)),
    PRIMARY KEY (consumer, event_id)
) WITHOUT ROWID;

CREATE INDEX outbox_inbox_handled_at ON outbox_inbox (consumer, handled_at);
