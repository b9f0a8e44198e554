DROP TABLE outbox_relay_member;
DROP TABLE outbox_lease;
DROP INDEX outbox_failing;
DROP INDEX outbox_pending;
ALTER TABLE outbox DROP COLUMN parked_at, DROP COLUMN next_attempt_at, DROP COLUMN partition;
CREATE INDEX outbox_pending ON outbox (seq) WHERE published_at IS NULL;
