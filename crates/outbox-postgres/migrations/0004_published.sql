-- Published events kept for replay. A relay told to keep them moves each
-- acknowledged event here in the statement that deletes it from the events
-- table, and deletes rows published longer ago than it keeps them. A relay that
-- keeps nothing never writes here, and the table stays empty.
CREATE TABLE __SCHEMA__.published (
    id           bigint      PRIMARY KEY,
    event_id     uuid        NOT NULL,
    stream       text        NOT NULL,
    key          text        NOT NULL,
    seq          bigint      NOT NULL,
    partition    smallint    NOT NULL,
    event_type   text        NOT NULL,
    content_type text        NOT NULL,
    payload      bytea       NOT NULL,
    headers      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL,
    attempts     integer     NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now()
);

-- Expiry deletes the oldest rows first.
CREATE INDEX published_published_at_idx ON __SCHEMA__.published (published_at);
