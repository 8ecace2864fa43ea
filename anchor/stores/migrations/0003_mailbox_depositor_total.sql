-- The anchor bounds what one depositor key holds across all recipients (mailbox.max_envelopes_per_depositor_total):
-- counting that on every deposit needs an index on the depositor.
CREATE INDEX mailbox_depositor_expiry ON mailbox (depositor, expires_at_ms);
