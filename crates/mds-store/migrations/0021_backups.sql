-- Backups: restore points (one environment, every service, one moment),
-- the restores made from them, and the managed engine's continuous
-- archive (WAL segments and base backups) for point-in-time recovery.
--
-- The bytes live in the backup repository (`--backup-url`), encrypted; a
-- row here lists each file with its size and BLAKE3, so a drill or a
-- restore checks every byte it reads against what was written.
--
-- A row in state 'running' names the server incarnation doing the work
-- (migration 0014). If that incarnation is gone, nothing will finish it:
-- the next start marks it 'failed' and deletes its files, so a crash
-- never leaves a point listed as complete or a binding switched to
-- unchecked data.
--
-- Restore points outlive the project rows they came from on purpose (no
-- foreign key): the point taken before a purge is what undoes it.

CREATE TABLE restore_points (
    id              text PRIMARY KEY,
    tenant_id       text NOT NULL,
    project_id      text NOT NULL,
    environment_id  text NOT NULL,
    -- The environment's name when the point was taken.
    environment     text NOT NULL,
    -- manual | schedule | before-delete | before-purge | before-restore
    reason          text NOT NULL,
    state           text NOT NULL CHECK (state IN ('running', 'complete', 'failed')),
    error           text,
    holder          bigint,
    -- The managed engine's WAL position when its databases were captured.
    wal_lsn         text,
    size_bytes      bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    expires_at      timestamptz,
    -- unverified | passed | failed: the last drill's verdict.
    verification    text NOT NULL DEFAULT 'unverified',
    verified_at     timestamptz,
    verification_detail jsonb
);
CREATE INDEX restore_points_place ON restore_points (project_id, environment_id, created_at DESC);

CREATE TABLE restore_point_items (
    id               text PRIMARY KEY,
    restore_point_id text NOT NULL REFERENCES restore_points (id) ON DELETE CASCADE,
    binding_id       text NOT NULL,
    service_id       text NOT NULL,
    service_name     text NOT NULL,
    kind             text NOT NULL,
    -- [{ "path", "size", "blake3" }]: the repository files of this item.
    files            jsonb NOT NULL DEFAULT '[]',
    -- What the service held at that moment, for the drill to compare:
    -- per-table row counts and checksums, key counts and samples, object
    -- counts, user counts.
    record           jsonb NOT NULL DEFAULT '{}',
    size_bytes       bigint NOT NULL DEFAULT 0
);
CREATE INDEX restore_point_items_point ON restore_point_items (restore_point_id);

CREATE TABLE restores (
    id                text PRIMARY KEY,
    project_id        text NOT NULL,
    -- The binding whose data is replaced.
    binding_id        text NOT NULL,
    restore_point_id  text,
    to_time           timestamptz,
    -- The point taken of the data this restore replaced: its undo.
    undo_point_id     text,
    state             text NOT NULL CHECK (state IN ('running', 'complete', 'failed')),
    holder            bigint,
    error             text,
    report            jsonb NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz
);
-- One restore of a binding at a time: a second one gets 409.
CREATE UNIQUE INDEX restores_one_running ON restores (binding_id) WHERE state = 'running';

CREATE TABLE wal_segments (
    -- The segment's file name: timeline and position (or a .history file).
    name         text PRIMARY KEY,
    path         text NOT NULL,
    size_bytes   bigint NOT NULL,
    blake3       text NOT NULL,
    archived_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE base_backups (
    id              text PRIMARY KEY,
    state           text NOT NULL CHECK (state IN ('running', 'complete', 'failed')),
    holder          bigint,
    error           text,
    path            text,
    size_bytes      bigint NOT NULL DEFAULT 0,
    blake3          text,
    -- The first WAL segment a recovery from this backup needs.
    start_wal_file  text,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

-- How many days an environment keeps its restore points (NULL: the
-- server's default).
ALTER TABLE environments ADD COLUMN backup_retention_days integer
    CHECK (backup_retention_days IS NULL OR backup_retention_days BETWEEN 1 AND 3650);
