-- Deployments: a stable app (name, run command) whose immutable versions
-- are published from sandboxes and promoted per environment. Each version's
-- artifact is a tar+zstd file in the release store, named by its SHA-256.
-- Nothing here refers to data: promoting or rolling back changes which code
-- runs, never what the data services hold.

CREATE TABLE deployments (
    id                text PRIMARY KEY,
    tenant_id         text NOT NULL,
    -- The project whose environments the versions run in (and whose
    -- variables they boot with); set at create or by the first publish.
    project_id        text REFERENCES projects (id) ON DELETE CASCADE,
    name              text NOT NULL,
    slug              text NOT NULL,
    run_command       text,
    build_command     text,
    port              integer,
    health_check_path text,
    -- stopped: taken off the air (instances stopped until a promote).
    stopped           boolean NOT NULL DEFAULT false,
    -- The last version number handed out: numbers are never reused.
    version_counter   integer NOT NULL DEFAULT 0,
    linked_database_id text,
    metadata          jsonb NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
-- Slugs name hosts (`<slug>.<environment>.localhost`), which are shared by
-- every tenant: unique across them all, like app names on Heroku.
CREATE UNIQUE INDEX deployments_slug_key ON deployments (slug);

CREATE TABLE deployment_versions (
    id                text PRIMARY KEY,
    deployment_id     text NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    tenant_id         text NOT NULL,
    version_number    integer NOT NULL,
    -- static or dynamic.
    kind              text NOT NULL,
    -- created, building, ready, failed, archived.
    state             text NOT NULL,
    source_sandbox_id text,
    output_path       text,
    entrypoint        text,
    artifact_sha256   text,
    artifact_bytes    bigint,
    -- {files, total_bytes, entrypoint}
    manifest          jsonb NOT NULL DEFAULT '{}',
    runtime_command   text,
    runtime_port      integer,
    health_check_path text,
    build_log         text NOT NULL DEFAULT '',
    promoted_at       timestamptz,
    archived_at       timestamptz,
    ready_at          timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (deployment_id, version_number)
);

-- Which version serves in each environment, and the one before it (where a
-- rollback without a version goes).
CREATE TABLE deployment_environments (
    deployment_id       text NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    environment_id      text NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    active_version_id   text NOT NULL REFERENCES deployment_versions (id),
    previous_version_id text REFERENCES deployment_versions (id),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (deployment_id, environment_id)
);

-- Variables of a deployment in one environment, sealed like the others.
CREATE TABLE deployment_variables (
    deployment_id  text NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    environment_id text NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    name           text NOT NULL,
    sealed_value   bytea NOT NULL,
    is_secret      boolean NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (deployment_id, environment_id, name)
);

-- Volumes a deployment mounts in an environment: each instance of it takes
-- the volume's lease (holder_kind 'instance') while it runs.
CREATE TABLE deployment_volumes (
    deployment_id  text NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    environment_id text NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    volume_id      text NOT NULL REFERENCES volumes (id) ON DELETE CASCADE,
    mount_path     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (deployment_id, environment_id, volume_id)
);

-- Runtime instances: a supervised process running one version in one
-- environment. Rows are kept (state 'destroyed') as a record.
CREATE TABLE runtime_instances (
    id                   text PRIMARY KEY,
    tenant_id            text NOT NULL,
    deployment_id        text NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    environment_id       text NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    version_id           text NOT NULL REFERENCES deployment_versions (id) ON DELETE CASCADE,
    -- provisioning, starting, healthy, unhealthy, error, stopped, destroyed.
    state                text NOT NULL,
    desired_state        text NOT NULL DEFAULT 'running',
    port                 integer,
    restart_count        integer NOT NULL DEFAULT 0,
    error_message        text,
    last_health_check_at timestamptz,
    started_at           timestamptz,
    stopped_at           timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runtime_instances_deployment ON runtime_instances (deployment_id, created_at);
CREATE INDEX runtime_instances_live ON runtime_instances (state) WHERE state <> 'destroyed';
