DROP INDEX outbox_created_at;
DROP TABLE outbox_audit;
DROP TABLE outbox_relay_control;
