-- 0001: the anchor's relational state. Times the caller supplies are integer milliseconds since the Unix epoch
-- (suffix _ms); times the server stamps are timestamptz.

-- A peer's or user's profile (display data; nothing secret).
CREATE TABLE profiles (
    profile_id   text PRIMARY KEY,
    display_name text NOT NULL DEFAULT '',
    data         jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Durable sessions (Redis holds the hot cache with a TTL; this is the record).
CREATE TABLE sessions (
    session_id    text PRIMARY KEY,
    subject       text NOT NULL,
    data          jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at_ms bigint NOT NULL
);
CREATE INDEX sessions_expires ON sessions (expires_at_ms);

-- Agents' saved state, versioned for optimistic concurrency.
CREATE TABLE agent_states (
    agent_id   text NOT NULL,
    key        text NOT NULL,
    state      jsonb NOT NULL,
    version    bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, key)
);

-- Sealed envelopes (courier Noise_X ciphertext) for offline peers. The anchor never sees plaintext.
-- dedupe_id is the sender-provided ID (or a digest of the envelope): depositing the same one twice is a no-op.
CREATE TABLE mailbox (
    id              bigserial PRIMARY KEY,
    recipient       bytea NOT NULL,
    dedupe_id       bytea NOT NULL,
    envelope        bytea NOT NULL,
    expires_at_ms   bigint NOT NULL,
    deposited_at_ms bigint NOT NULL,
    UNIQUE (recipient, dedupe_id)
);
CREATE INDEX mailbox_recipient ON mailbox (recipient, id);
CREATE INDEX mailbox_expires ON mailbox (expires_at_ms);

-- Every state change made through the gateway.
CREATE TABLE audit_log (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  text NOT NULL,
    action text NOT NULL,
    target text NOT NULL DEFAULT '',
    detail jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_at ON audit_log (at);

-- API keys: only the SHA-256 of the secret is kept (the secret has 256 bits of entropy, so a fast hash is
-- enough; it is shown to its owner once, at creation).
CREATE TABLE api_keys (
    key_id        text PRIMARY KEY,
    name          text NOT NULL,
    role          text NOT NULL CHECK (role IN ('admin', 'user', 'node')),
    scopes        text[] NOT NULL DEFAULT '{}',
    secret_sha256 bytea NOT NULL UNIQUE CHECK (length(secret_sha256) = 32),
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);
