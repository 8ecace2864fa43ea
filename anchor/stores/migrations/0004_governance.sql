-- Governance on anchors (anchor.stores.govstore_pg): the wire bytes the governance core accepted, per namespace,
-- and the votes this node signed (written before they are sent: a restart never signs a slot twice).
CREATE TABLE gov_meta (
    namespace text NOT NULL,
    key text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE TABLE gov_proposals (
    namespace text NOT NULL,
    hash bytea NOT NULL,
    epoch bigint NOT NULL,
    round bigint NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (namespace, hash)
);
CREATE TABLE gov_votes (
    namespace text NOT NULL,
    voter bytea NOT NULL,
    epoch bigint NOT NULL,
    round bigint NOT NULL,
    type smallint NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (namespace, voter, epoch, round, type)
);
CREATE TABLE gov_certificates (
    namespace text NOT NULL,
    epoch bigint NOT NULL,
    round bigint NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (namespace, epoch, round)
);
CREATE TABLE gov_evidence (
    namespace text NOT NULL,
    voter bytea NOT NULL,
    epoch bigint NOT NULL,
    round bigint NOT NULL,
    type smallint NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (namespace, voter, epoch, round, type)
);
CREATE TABLE gov_signed (
    namespace text NOT NULL,
    signer bytea NOT NULL,
    epoch bigint NOT NULL,
    round bigint NOT NULL,
    type smallint NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (namespace, signer, epoch, round, type)
);
