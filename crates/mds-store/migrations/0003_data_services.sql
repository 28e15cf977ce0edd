-- Data services and their bindings (desired state). A data service of a
-- kind is attached to a project; a binding is that service in one
-- environment: a database and a login role on the engine, with its own
-- sealed password. The reconciler makes the engine match these rows.
--
-- No ON DELETE CASCADE from projects or environments: data is deleted only
-- by an explicit, confirmed delete of its service (or a purge).

CREATE TABLE data_services (
    id             text PRIMARY KEY,
    project_id     text NOT NULL REFERENCES projects (id),
    kind           text NOT NULL,
    name           text NOT NULL,
    -- '' for the first service of its kind (standard names such as
    -- DATABASE_URL); 'ANALYTICS_' for a named further one.
    env_prefix     text NOT NULL,
    -- NULL: bound in every environment, including ones created later.
    environment_id text REFERENCES environments (id),
    config         jsonb NOT NULL DEFAULT '{}',
    deleting       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT data_services_name_key UNIQUE (project_id, name),
    CONSTRAINT data_services_prefix_key UNIQUE (project_id, kind, env_prefix)
);

CREATE TABLE bindings (
    id              text PRIMARY KEY,
    service_id      text NOT NULL REFERENCES data_services (id),
    environment_id  text NOT NULL REFERENCES environments (id),
    -- What the engine should have: running, stopped or deleted.
    desired         text NOT NULL DEFAULT 'running',
    -- What it has, as last observed: provisioning, running, stopped,
    -- deleting or error.
    state           text NOT NULL DEFAULT 'provisioning',
    last_error      text,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- A replica working on this binding holds it until then.
    lease_until     timestamptz,
    -- The database and role name on the engine.
    resource_name   text NOT NULL,
    sealed_password bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    ready_at        timestamptz,
    CONSTRAINT bindings_service_environment_key UNIQUE (service_id, environment_id),
    CONSTRAINT bindings_resource_key UNIQUE (resource_name)
);
CREATE INDEX bindings_due ON bindings (next_attempt_at) WHERE state <> desired;

CREATE TABLE binding_events (
    id         bigserial PRIMARY KEY,
    binding_id text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    stream     text NOT NULL,
    line       text NOT NULL
);
CREATE INDEX binding_events_binding ON binding_events (binding_id, id);
