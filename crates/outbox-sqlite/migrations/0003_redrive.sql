-- Dead letters can be retried: put back into the events table at the position
-- they had. A retrying transaction first lists the ids it puts back in
-- outbox_redrive; the insert trigger leaves those rows' positions alone and
-- assigns the next position to every other insert, as before.
CREATE TABLE outbox_redrive (id INTEGER PRIMARY KEY);

DROP TRIGGER outbox_events_after_insert;

CREATE TRIGGER outbox_events_after_insert AFTER INSERT ON outbox_events
WHEN NOT EXISTS (SELECT 1 FROM outbox_redrive WHERE id = NEW.id)
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
