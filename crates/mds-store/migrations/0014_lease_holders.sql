-- Leases name the server incarnation that holds them, so that a lease of a
-- server that died does not hold its bindings until `lease_until`.
--
-- A server has an id kept in its data dir (replicas have their own) and a
-- new incarnation at every start. At start it ends its earlier
-- incarnations, whose leases any pass then takes over at once; a replica
-- whose heartbeat stopped loses its leases the same way after a few
-- heartbeats. A lease without a holder (written before this migration)
-- still lasts until `lease_until`.

CREATE TABLE server_incarnations (
    id           bigserial PRIMARY KEY,
    server_id    text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    -- Set by a clean shutdown, or by the next start of the same server.
    ended_at     timestamptz
);
CREATE INDEX server_incarnations_server ON server_incarnations (server_id) WHERE ended_at IS NULL;

-- No foreign key: an incarnation row that was pruned holds nothing.
ALTER TABLE bindings ADD COLUMN lease_holder bigint;

-- A binding's state or desired state changed: waiters (an attach with
-- ?wait=true) on every replica wake on channel `mds_invalidate`, whose
-- listener already exists for the cache (migration 0002).
CREATE FUNCTION mds_notify_binding() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed record;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed := OLD;
    ELSE
        changed := NEW;
    END IF;
    PERFORM pg_notify('mds_invalidate', 'binding:' || changed.service_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER bindings_notify
    AFTER INSERT OR DELETE OR UPDATE OF state, desired ON bindings
    FOR EACH ROW EXECUTE FUNCTION mds_notify_binding();
