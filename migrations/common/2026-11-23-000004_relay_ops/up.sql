-- What the relay's ops dashboard and CLI need: a pause switch per source
-- database, read by every relay replica, and an audit log of operator actions
-- (replays, pauses, unparks, dead-letter retries and discards).

-- One row. A paused source is not published by any replica; the state lives
-- here, not in a replica's memory, so a pause holds across replicas and
-- restarts.
CREATE TABLE outbox_relay_control (
    singleton    boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    paused_at    timestamptz,
    paused_by    text,
    pause_reason text
);
INSERT INTO outbox_relay_control DEFAULT VALUES;

-- Who did what, when and why. `detail` holds what the action touched (the
-- selector and event ids of a replay, the body of a discarded dead letter).
CREATE TABLE outbox_audit (
    id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    by     text        NOT NULL,
    action text        NOT NULL,
    target text        NOT NULL,
    reason text,
    count  integer     NOT NULL DEFAULT 0,
    detail jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX outbox_audit_action ON outbox_audit (action, id);

-- The event browser looks events up by time range. BRIN: rows arrive in
-- created_at order, and a BRIN index costs writers next to nothing.
CREATE INDEX outbox_created_at ON outbox USING brin (created_at);
