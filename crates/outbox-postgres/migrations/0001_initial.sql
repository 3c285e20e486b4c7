-- The outbox layout. Every name below is qualified with the configured schema,
-- written here as __SCHEMA__ and replaced by a validated, quoted identifier.

-- Time-ordered UUIDs for rows inserted by plain SQL without an event_id: the
-- first 48 bits are the Unix time in milliseconds, the version nibble is 7.
CREATE FUNCTION __SCHEMA__.uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(
                        floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint
                    ) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

-- The position allocator: one row per (stream, key). A writer takes the row's
-- lock when it enqueues and holds it until its transaction ends, so positions
-- of one key are handed out in commit order, without gaps.
CREATE TABLE __SCHEMA__.key_positions (
    stream   text   NOT NULL,
    key      text   NOT NULL,
    last_seq bigint NOT NULL,
    PRIMARY KEY (stream, key)
);

CREATE SEQUENCE __SCHEMA__.events_id_seq AS bigint;

-- Pending events. A row leaves this table when its publish is acknowledged
-- (or when it moves to the dead letters), so the table holds the backlog only.
CREATE TABLE __SCHEMA__.events (
    id              bigint      PRIMARY KEY,
    event_id        uuid        NOT NULL DEFAULT __SCHEMA__.uuid_v7(),
    stream          text        NOT NULL,
    key             text        NOT NULL,
    seq             bigint      NOT NULL,
    partition       smallint    NOT NULL,
    event_type      text        NOT NULL,
    content_type    text        NOT NULL DEFAULT 'application/json',
    payload         bytea       NOT NULL,
    headers         jsonb       NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at timestamptz,
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_position_key UNIQUE (stream, key, seq),
    CONSTRAINT events_stream_check CHECK (stream ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'),
    CONSTRAINT events_key_check CHECK (key <> ''),
    CONSTRAINT events_event_type_check CHECK (event_type <> ''),
    CONSTRAINT events_headers_check CHECK (jsonb_typeof(headers) = 'object')
);

-- Events whose publication gave up, kept apart with their last error.
CREATE TABLE __SCHEMA__.dead_letters (
    id           bigint      PRIMARY KEY,
    event_id     uuid        NOT NULL UNIQUE,
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
    last_error   text        NOT NULL,
    dead_at      timestamptz NOT NULL DEFAULT now(),
    -- Whether later events of the key wait until this one is retried or
    -- discarded (the relay's `hold` policy), or were let through (`skip`).
    held         boolean     NOT NULL DEFAULT false
);

CREATE INDEX dead_letters_key_idx ON __SCHEMA__.dead_letters (stream, key, seq);

-- Partition ownership for relays: a relay publishes only events of partitions
-- it holds an unexpired lease on. The fence grows with every change of owner,
-- so a relay that lost its lease cannot complete work under the old one.
CREATE TABLE __SCHEMA__.leases (
    partition  smallint    PRIMARY KEY,
    owner      uuid,
    fence      bigint      NOT NULL DEFAULT 0,
    expires_at timestamptz
);

INSERT INTO __SCHEMA__.leases (partition)
SELECT p FROM generate_series(0, 255) AS p;

-- Live relays, so that each can take its fair share of the partitions.
CREATE TABLE __SCHEMA__.relays (
    relay_id        uuid        PRIMARY KEY,
    heartbeat_until timestamptz NOT NULL
);

-- Relays that are idle and waiting for a notification. Writers send NOTIFY only
-- while one is parked: a NOTIFY serializes commits database-wide, so sending
-- one from every transaction would halve the write rate under load.
CREATE TABLE __SCHEMA__.parked_relays (
    relay_id     uuid        PRIMARY KEY,
    parked_until timestamptz NOT NULL
);

-- Assigns what the writer does not choose: the row id, the key's next
-- position and the partition. Checks a JSON payload, then wakes a parked relay.
CREATE FUNCTION __SCHEMA__.events_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO __SCHEMA__.key_positions AS k (stream, key, last_seq)
    VALUES (NEW.stream, NEW.key, 1)
    ON CONFLICT (stream, key) DO UPDATE SET last_seq = k.last_seq + 1
    RETURNING k.last_seq INTO NEW.seq;

    -- Drawn after the key's lock is held, so ids of one key follow positions.
    NEW.id := nextval('__SCHEMA__.events_id_seq');
    NEW.partition := (hashtextextended(NEW.stream || E'\n' || NEW.key, 0) & 255)::smallint;

    -- The library's rule: the media type before any `;`, trimmed, ignoring case.
    IF lower(btrim(split_part(NEW.content_type, ';', 1), E' \t')) = 'application/json'
       OR lower(btrim(split_part(NEW.content_type, ';', 1), E' \t')) LIKE '%+json' THEN
        -- Fails with invalid_text_representation (22P02) when it does not parse.
        -- No exception block: that would open a subtransaction per row.
        PERFORM convert_from(NEW.payload, 'UTF8')::jsonb;
    END IF;

    IF EXISTS (SELECT 1 FROM __SCHEMA__.parked_relays WHERE parked_until > now()) THEN
        PERFORM pg_notify('__CHANNEL__', '');
    END IF;

    RETURN NEW;
END
$$;

CREATE TRIGGER events_before_insert
BEFORE INSERT ON __SCHEMA__.events
FOR EACH ROW EXECUTE FUNCTION __SCHEMA__.events_before_insert();

-- The SQL contract for writers outside Rust: call inside your transaction.
CREATE FUNCTION __SCHEMA__.enqueue(
    stream     text,
    key        text,
    event_type text,
    payload    jsonb,
    headers    jsonb DEFAULT '{}'
) RETURNS TABLE (event_id uuid, seq bigint)
LANGUAGE sql AS $$
    INSERT INTO __SCHEMA__.events (stream, key, event_type, payload, headers)
    VALUES (enqueue.stream, enqueue.key, enqueue.event_type,
            convert_to(enqueue.payload::text, 'UTF8'), enqueue.headers)
    RETURNING events.event_id, events.seq
$$;
