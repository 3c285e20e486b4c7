-- Published events kept for replay. A relay told to keep them moves each
-- acknowledged event here in the transaction that deletes it from
-- outbox_events, and deletes rows published longer ago than it keeps them. A
-- relay that keeps nothing never writes here, and the table stays empty.
-- Times are Unix milliseconds, as in outbox_events.
CREATE TABLE outbox_published (
    id           INTEGER PRIMARY KEY,
    event_id     TEXT    NOT NULL,
    stream       TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    partition    INTEGER NOT NULL,
    event_type   TEXT    NOT NULL,
    content_type TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    headers      TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    attempts     INTEGER NOT NULL,
    published_at INTEGER NOT NULL
);

-- Expiry deletes the oldest rows first.
CREATE INDEX outbox_published_published_at_idx ON outbox_published (published_at);
