-- Replicas cache hot reads (projects, API keys) in memory. Every change to
-- those rows announces itself on channel `mds_invalidate`, after commit, so
-- each replica drops what it cached. Usage stamps (last_used_at) do not
-- count as changes.

CREATE FUNCTION mds_notify_invalidate() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed record;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed := OLD;
    ELSE
        changed := NEW;
    END IF;
    IF TG_TABLE_NAME = 'projects' THEN
        PERFORM pg_notify('mds_invalidate', 'project:' || changed.id);
    ELSIF TG_TABLE_NAME = 'environments' THEN
        PERFORM pg_notify('mds_invalidate', 'project:' || changed.project_id);
    ELSIF TG_TABLE_NAME = 'api_keys' THEN
        PERFORM pg_notify('mds_invalidate', 'api_key:' || changed.id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER projects_invalidate
    AFTER INSERT OR UPDATE OR DELETE ON projects
    FOR EACH ROW EXECUTE FUNCTION mds_notify_invalidate();

CREATE TRIGGER environments_invalidate
    AFTER INSERT OR UPDATE OR DELETE ON environments
    FOR EACH ROW EXECUTE FUNCTION mds_notify_invalidate();

CREATE TRIGGER api_keys_invalidate
    AFTER UPDATE OF name, token_hash, scopes, expires_at, revoked_at OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION mds_notify_invalidate();
