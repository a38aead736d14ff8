-- mailferry coordination schema, version 1 (docs/coordination.md, "Tables").

-- An endpoint as batches reference it: the endpoint file's absolute path as its name, its
-- TOML text (read again by every worker) and the limits every worker obeys together.
CREATE TABLE endpoints (
    name                  text PRIMARY KEY,
    record                text NOT NULL,
    max_concurrent_moves  integer NOT NULL CHECK (max_concurrent_moves > 0),
    -- Of those, moves that synced before (incremental passes).
    max_concurrent_incremental_syncs integer NOT NULL CHECK (max_concurrent_incremental_syncs > 0),
    -- NULL: no connection budget.
    max_connections       integer CHECK (max_connections > 0),
    -- Connections one move reads with (`connections`, cut to max_connections).
    connections_per_move  integer NOT NULL CHECK (connections_per_move > 0),
    max_bytes_per_second  bigint,
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- A batch: its batch.json record, and whether it is suspended.
CREATE TABLE batches (
    name        text PRIMARY KEY,
    record      jsonb NOT NULL,
    endpoint    text NOT NULL REFERENCES endpoints (name),
    suspended   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One move (one mailbox of a batch), its lifecycle and its lease.
CREATE TABLE moves (
    id                 text PRIMARY KEY,
    batch              text NOT NULL REFERENCES batches (name),
    address            text NOT NULL,
    endpoint           text NOT NULL REFERENCES endpoints (name),
    -- The batch's user entry (CSV row, password source: never a password).
    user_record        jsonb NOT NULL,
    state              text NOT NULL,
    lifecycle          jsonb NOT NULL,
    -- Queued for a pass: 'sync' (batch start) or 'complete' (batch complete).
    runnable           boolean NOT NULL DEFAULT false,
    pass_kind          text NOT NULL DEFAULT 'sync' CHECK (pass_kind IN ('sync', 'complete')),
    approve_skipped    boolean NOT NULL DEFAULT false,
    -- A suspension asked for while a worker holds the lease (applied when its pass ends).
    suspend_request    jsonb,
    lease_owner        text,
    -- The fencing number: incremented by every lease; only its holder may write.
    lease_epoch        bigint NOT NULL DEFAULT 0,
    lease_expires      timestamptz,
    -- Connections the lease holds of the endpoint's max_connections.
    lease_connections  integer NOT NULL DEFAULT 0,
    heartbeat_at       timestamptz,
    last_error         text,
    -- Passes that failed in a row since the move was queued, and when it may be leased
    -- again (a failed pass is retried a few times, later each time).
    attempts           integer NOT NULL DEFAULT 0,
    not_before         timestamptz,
    UNIQUE (batch, address)
);
CREATE INDEX moves_runnable ON moves (endpoint, batch, address) WHERE runnable;
CREATE INDEX moves_leased ON moves (endpoint) WHERE lease_owner IS NOT NULL;

-- The source side's audit log of each move, one row per record, byte for byte as the
-- agent wrote the line (still hash-chained); epoch: the lease that wrote it.
CREATE TABLE source_audit (
    move_id  text NOT NULL REFERENCES moves (id),
    seq      bigint NOT NULL,
    line     text NOT NULL,
    epoch    bigint NOT NULL,
    PRIMARY KEY (move_id, seq)
);

-- The other files of a move's state: move.json, audit.head, audit-sign.key (the source
-- side's signing key), report.json.
CREATE TABLE source_files (
    move_id  text NOT NULL REFERENCES moves (id),
    name     text NOT NULL,
    bytes    bytea NOT NULL,
    PRIMARY KEY (move_id, name)
);

-- Every pass's report (reports.jsonl, one row per line).
CREATE TABLE pass_reports (
    move_id  text NOT NULL REFERENCES moves (id),
    pass     integer NOT NULL,
    report   jsonb NOT NULL,
    epoch    bigint NOT NULL,
    PRIMARY KEY (move_id, pass)
);

-- Workers seen (for status and for dividing an endpoint's bytes/s).
CREATE TABLE workers (
    id         text PRIMARY KEY,
    host       text NOT NULL,
    pid        integer NOT NULL,
    started    timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now(),
    stopping   boolean NOT NULL DEFAULT false
);
