-- The outbox layout on SQLite: the same logical tables as on PostgreSQL, with
-- an `outbox_` prefix instead of a schema. SQLite admits one writer at a time,
-- so row ids follow commit order and no transaction can commit "late".

-- One row per (stream, key): the last position handed out.
CREATE TABLE outbox_key_positions (
    stream   TEXT    NOT NULL,
    key      TEXT    NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (stream, key)
) WITHOUT ROWID;

-- Pending events. AUTOINCREMENT keeps ids from being reused after the newest
-- rows are deleted. Times are Unix milliseconds. SQLite runs one relay at a
-- time, so every event is in partition 0.
CREATE TABLE outbox_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL UNIQUE DEFAULT (lower(
        substr(printf('%012x', CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER)), 1, 8)
        || '-' ||
        substr(printf('%012x', CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER)), 9, 4)
        || '-7' || substr(hex(randomblob(2)), 2, 3)
        || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2, 3)
        || '-' || hex(randomblob(6)))),
    -- The library's stream rule: 1 to 128 of [A-Za-z0-9_.-], not starting with
    -- `_`, `-` or `.`.
    stream          TEXT    NOT NULL CHECK (
        length(stream) BETWEEN 1 AND 128
        AND stream NOT GLOB '*[^A-Za-z0-9_.-]*'
        AND substr(stream, 1, 1) GLOB '[A-Za-z0-9]'),
    key             TEXT    NOT NULL CHECK (key <> ''),
    seq             INTEGER NOT NULL DEFAULT 0,
    partition       INTEGER NOT NULL DEFAULT 0,
    event_type      TEXT    NOT NULL CHECK (event_type <> ''),
    content_type    TEXT    NOT NULL DEFAULT 'application/json',
    payload         BLOB    NOT NULL CHECK (typeof(payload) = 'blob'),
    headers         TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(headers)),
    created_at      INTEGER NOT NULL
        DEFAULT (CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER)),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at INTEGER
);

CREATE INDEX outbox_events_position_idx ON outbox_events (stream, key, seq);

-- Hands out the key's next position and checks a JSON payload. Positions are
-- assigned here rather than by the writer so that plain SQL inserts get them.
-- A media type is JSON by the library's rule: its part before any `;`, without
-- surrounding blanks and ignoring case, is `application/json` or ends in `+json`.
CREATE TRIGGER outbox_events_after_insert AFTER INSERT ON outbox_events
BEGIN
    SELECT RAISE(ABORT, 'payload is declared json but is not valid json')
    FROM (SELECT lower(trim(substr(NEW.content_type, 1,
                                   instr(NEW.content_type || ';', ';') - 1),
                            ' ' || char(9))) AS essence)
    WHERE (essence = 'application/json' OR essence LIKE '%+json')
      AND NOT json_valid(CAST(NEW.payload AS TEXT));

    INSERT INTO outbox_key_positions (stream, key, last_seq)
    VALUES (NEW.stream, NEW.key, 1)
    ON CONFLICT (stream, key) DO UPDATE SET last_seq = last_seq + 1;

    UPDATE outbox_events
    SET seq = (SELECT last_seq FROM outbox_key_positions
               WHERE stream = NEW.stream AND key = NEW.key)
    WHERE id = NEW.id;
END;

-- Events whose publication gave up, kept apart with their last error.
CREATE TABLE outbox_dead_letters (
    id           INTEGER PRIMARY KEY,
    event_id     TEXT    NOT NULL UNIQUE,
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
    last_error   TEXT    NOT NULL,
    dead_at      INTEGER NOT NULL
        DEFAULT (CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER)),
    held         INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX outbox_dead_letters_key_idx ON outbox_dead_letters (stream, key, seq);

-- The single partition's lease: which relay may publish, fenced by a counter.
CREATE TABLE outbox_leases (
    partition  INTEGER PRIMARY KEY,
    owner      TEXT,
    fence      INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER
);

INSERT INTO outbox_leases (partition) VALUES (0);
