-- Dead letters can be retried: put back into the events table at the position
-- they had. A transaction doing so sets `outbox.redrive` to `on` (locally), and
-- the insert trigger then keeps the row's id, position and partition instead
-- of assigning new ones; every other insert is treated as before.
CREATE OR REPLACE FUNCTION __SCHEMA__.events_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('outbox.redrive', true), '') <> 'on' THEN
        INSERT INTO __SCHEMA__.key_positions AS k (stream, key, last_seq)
        VALUES (NEW.stream, NEW.key, 1)
        ON CONFLICT (stream, key) DO UPDATE SET last_seq = k.last_seq + 1
        RETURNING k.last_seq INTO NEW.seq;

        -- Drawn after the key's lock is held, so ids of one key follow positions.
        NEW.id := nextval('__SCHEMA__.events_id_seq');
        NEW.partition :=
            (hashtextextended(NEW.stream || E'\n' || NEW.key, 0) & 255)::smallint;
    END IF;

    -- The library's rule: the media type before any `;`, trimmed, ignoring case.
    IF lower(btrim(split_part(NEW.content_type, ';', 1), E' \t')) = 'application/json'
       OR lower(btrim(split_part(NEW.content_type, ';', 1), E' \t')) LIKE '%+json' THEN
        PERFORM convert_from(NEW.payload, 'UTF8')::jsonb;
    END IF;

    IF EXISTS (SELECT 1 FROM __SCHEMA__.parked_relays WHERE parked_until > now()) THEN
        PERFORM pg_notify('__CHANNEL__', '');
    END IF;

    RETURN NEW;
END
$$;
