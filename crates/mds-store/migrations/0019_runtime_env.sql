-- Runtime env (`POST /runtime-env`): variables of the whole tenant, of
-- its one workspace, or of one project, for the sandboxes, the runtime
-- instances, or both (`target`). Sealed like the other variables; the
-- sealing context is the unique key, so an upsert needs no read first.
-- A project's rows go with the project.

CREATE TABLE runtime_env (
    id           text PRIMARY KEY,
    tenant_id    text NOT NULL,
    scope        text NOT NULL CHECK (scope IN ('tenant', 'workspace', 'project')),
    workspace_id text NOT NULL,
    project_id   text REFERENCES projects (id) ON DELETE CASCADE,
    target       text NOT NULL CHECK (target IN ('all', 'sandbox', 'runtime')),
    name         text NOT NULL,
    sealed_value bytea NOT NULL,
    is_secret    boolean NOT NULL,
    enabled      boolean NOT NULL DEFAULT true,
    metadata     jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((scope = 'project') = (project_id IS NOT NULL))
);
-- One value per (scope, project, target, name): a set of the same key replaces it.
CREATE UNIQUE INDEX runtime_env_key ON runtime_env (tenant_id, scope, COALESCE(project_id, ''), target, name);
CREATE INDEX runtime_env_project ON runtime_env (project_id) WHERE project_id IS NOT NULL;
