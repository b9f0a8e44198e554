-- What the test handlers apply. No unique key on purpose: a message applied
-- twice must show up as two rows, not as an error.
CREATE TABLE effects (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id   uuid    NOT NULL,
    n          integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
