-- The inbox of consumers. A consumer inserts (consumer, event_id) in the same
-- transaction as the effect of the event; the primary key turns a second
-- delivery of the event into a conflict, so its effect is not applied twice.
-- A concurrent second delivery waits on the first one's row lock and then sees
-- either the committed row (a duplicate) or no row (the first rolled back).
CREATE TABLE __SCHEMA__.inbox (
    consumer   text        NOT NULL
               CONSTRAINT inbox_consumer_check
               CHECK (consumer <> '' AND length(consumer) <= 200),
    event_id   uuid        NOT NULL,
    stream     text,
    key        text        NOT NULL,
    seq        bigint,
    event_type text        NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Pruning walks a consumer's oldest records.
CREATE INDEX inbox_handled_at ON __SCHEMA__.inbox (consumer, handled_at);
