-- Public networking of a managed Postgres data service: a row means its
-- databases (one per binding) are reachable on the engine's public
-- listener, over TLS, from the sources in `allowlist`. The rows are the
-- desired state: every start writes them into the engine's pg_hba.conf
-- again. A row goes with its service; nothing else cascades into it.

CREATE TABLE public_endpoints (
    service_id text PRIMARY KEY REFERENCES data_services (id) ON DELETE CASCADE,
    -- CIDRs, normalised; NULL admits any source (0.0.0.0/0 and ::/0).
    allowlist  text[],
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
