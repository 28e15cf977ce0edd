-- The audit log (issue 18): one row per operation that changes or reveals
-- data or access. Rows are numbered without gaps (seq), and each carries
-- the keyed hash of the one before it (prev_hash) and of itself (hash),
-- computed by mds with a key derived from the master key: a row edited,
-- removed or inserted in the database breaks the chain, and one who can
-- write the database but not read the master key cannot mend it.
CREATE TABLE audit_events (
    seq         bigint PRIMARY KEY,
    at          timestamptz NOT NULL,
    -- `key` (an API key: actor_id is its id, actor_name its name) or
    -- `system` (schedules, expiry).
    actor_kind  text NOT NULL CHECK (actor_kind IN ('key', 'system')),
    actor_id    text NOT NULL DEFAULT '',
    actor_name  text NOT NULL DEFAULT '',
    -- Whose events these are: the acting key's tenant, or the project's.
    tenant_id   text,
    project_id  text,
    source      text NOT NULL DEFAULT '',
    request_id  text NOT NULL DEFAULT '',
    action      text NOT NULL,
    target      text NOT NULL DEFAULT '',
    -- `ok`, `refused` (the client's mistake or no permission), `failed`.
    outcome     text NOT NULL,
    detail      text NOT NULL DEFAULT '',
    prev_hash   bytea NOT NULL,
    hash        bytea NOT NULL
);
CREATE INDEX audit_events_tenant ON audit_events (tenant_id, seq);
CREATE INDEX audit_events_project ON audit_events (project_id, seq);
CREATE INDEX audit_events_at ON audit_events (at);

-- Where the chain starts once retention has trimmed its old end: the seq
-- and hash of the last event removed (none yet: the first event's
-- prev_hash is 32 zero bytes).
CREATE TABLE audit_anchor (
    one        boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq        bigint NOT NULL,
    hash       bytea NOT NULL,
    trimmed_at timestamptz NOT NULL DEFAULT now()
);

-- Append-only: an UPDATE or DELETE is refused, except the retention trim,
-- which says so for its own transaction (mds.audit_trim).
CREATE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('mds.audit_trim', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit events are append-only';
END
$$;
CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
