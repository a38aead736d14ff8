-- mailferry coordination schema, version 3 (docs/coordination.md, "Schedules").

-- A batch's latest run as the admin service asked for it, and its schedule: start not
-- before start_at, then complete as soon as every mailbox is synced or at/after
-- complete_at. The workers move it along (`schedule::tick`); a phase change and the
-- passes it queues are one transaction, so each start and completion is queued once.
CREATE TABLE schedules (
    batch              text PRIMARY KEY REFERENCES batches (name),
    -- 'start': waiting for start_at; 'sync': its passes are queued or running;
    -- 'complete': waiting for complete_at; 'final': the final passes are queued or
    -- running; 'done': ended (error says why it stopped short, if it did).
    phase              text NOT NULL CHECK (phase IN ('start', 'sync', 'complete', 'final', 'done')),
    start_at           timestamptz,
    -- After the passes of 'sync': NULL (nothing), 'synced' (as soon as every mailbox is
    -- synced) or 'at' (at or after complete_at).
    completion         text CHECK (completion IN ('synced', 'at')),
    complete_at        timestamptz,
    approve_skipped    boolean NOT NULL DEFAULT false,
    -- Who asked (admin:NAME), when.
    actor              text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    -- Who queued the passes (worker:ID, or the asker for a start or completion now).
    start_fired_by     text,
    start_fired_at     timestamptz,
    complete_fired_by  text,
    complete_fired_at  timestamptz,
    finished_at        timestamptz,
    error              text,
    CHECK (phase <> 'start' OR start_at IS NOT NULL),
    CHECK (completion IS DISTINCT FROM 'at' OR complete_at IS NOT NULL)
);
CREATE INDEX schedules_pending ON schedules (batch) WHERE phase <> 'done';
