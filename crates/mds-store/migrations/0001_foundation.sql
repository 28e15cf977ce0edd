-- Projects, environments, shared variables, API keys, idempotency records.
-- Secrets are stored sealed (XChaCha20-Poly1305 under the master key);
-- nothing in this schema holds a plaintext credential.

CREATE TABLE settings (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projects (
    id           text PRIMARY KEY,
    tenant_id    text NOT NULL,
    workspace_id text NOT NULL,
    slug         text NOT NULL,
    name         text NOT NULL,
    description  text,
    metadata     jsonb NOT NULL DEFAULT '{}',
    attribution  jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT projects_slug_key UNIQUE (tenant_id, slug)
);

-- Environments are soft-deleted: a name can be reused once its holder is gone.
CREATE TABLE environments (
    id         text PRIMARY KEY,
    project_id text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name       text NOT NULL,
    slug       text NOT NULL,
    kind       text NOT NULL,
    is_default boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);
CREATE UNIQUE INDEX environments_name_key ON environments (project_id, name) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX environments_slug_key ON environments (project_id, slug) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX environments_default_key ON environments (project_id) WHERE is_default AND deleted_at IS NULL;

CREATE TABLE shared_variables (
    environment_id text NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    name           text NOT NULL,
    sealed_value   bytea NOT NULL,
    is_secret      boolean NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment_id, name)
);

CREATE TABLE api_keys (
    id           text PRIMARY KEY,
    tenant_id    text NOT NULL,
    name         text NOT NULL,
    token_hash   bytea NOT NULL,
    token_prefix text NOT NULL,
    scopes       text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    CONSTRAINT api_keys_token_hash_key UNIQUE (token_hash)
);

-- One row per (caller, Idempotency-Key, method, path). `status` is NULL
-- while the first request runs; the stored body is sealed because it can
-- hold a one-time secret (a new API key).
CREATE TABLE idempotency_records (
    principal_id text NOT NULL,
    key          text NOT NULL,
    method       text NOT NULL,
    path         text NOT NULL,
    request_hash bytea NOT NULL,
    status       smallint,
    content_type text,
    sealed_body  bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    locked_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal_id, key, method, path)
);
CREATE INDEX idempotency_records_created_at ON idempotency_records (created_at);
