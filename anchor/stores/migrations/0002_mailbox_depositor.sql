-- Who deposited each envelope (the depositor's BetaNet Ed25519 key; empty when unknown), so one depositor
-- cannot fill a recipient's mailbox: the anchor caps envelopes per (recipient, depositor).
ALTER TABLE mailbox ADD COLUMN depositor bytea NOT NULL DEFAULT '\x'::bytea;
CREATE INDEX mailbox_recipient_depositor ON mailbox (recipient, depositor);
