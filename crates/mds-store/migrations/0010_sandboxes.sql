-- Sandboxes: ephemeral, jailed process environments with a workspace of
-- their own. They hold no data that matters: that lives in the data
-- services their processes reach with the variables resolved at boot.
-- A destroyed sandbox keeps its row (state 'destroyed') as a record.

CREATE TABLE sandboxes (
    id              text PRIMARY KEY,
    tenant_id       text NOT NULL,
    -- NULL: a sandbox of no project (no bindings are injected).
    project_id      text REFERENCES projects (id) ON DELETE SET NULL,
    environment_id  text REFERENCES environments (id) ON DELETE SET NULL,
    name            text,
    -- creating, running, stopped, destroyed or error.
    state           text NOT NULL,
    template_id     text NOT NULL DEFAULT 'miosa-sandbox',
    -- The sandbox's own variables (create's env, then env.set), sealed.
    sealed_env      bytea NOT NULL,
    metadata        jsonb NOT NULL DEFAULT '{}',
    tags            text[] NOT NULL DEFAULT '{}',
    last_error      text,
    boot_ms         integer,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    ready_at        timestamptz,
    stopped_at      timestamptz,
    destroyed_at    timestamptz
);
CREATE UNIQUE INDEX sandboxes_name_key ON sandboxes (tenant_id, name)
    WHERE state <> 'destroyed' AND name IS NOT NULL;
CREATE INDEX sandboxes_tenant ON sandboxes (tenant_id, created_at DESC);
