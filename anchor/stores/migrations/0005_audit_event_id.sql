-- Audit records written first to Redis (POST /v1/messages: the audit record, the rate limits and the enqueue in
-- one atomic script) are drained here in batches by anchor.audit_drain, at least once: the gateway's event ID
-- makes a repeated insert (a drain that died between its INSERT and its XACK) a no-op. Rows written straight
-- here (token issued, key changes, mailbox) have none.
ALTER TABLE audit_log ADD COLUMN event_id text;
CREATE UNIQUE INDEX audit_log_event_id ON audit_log (event_id) WHERE event_id IS NOT NULL;
