-- Credential rotation with overlap (issue 18). A binding's credentials
-- have a generation: Postgres logs in with the role of that generation
-- (the binding's resource name at 0, then two login roles that take turns
-- over it, the owner of every object). A rotation first makes the
-- `pending` credentials work, then makes them current; the ones they
-- replace stay valid (`previous_*`) until `previous_until`, when the
-- grace sweep revokes them and ends their sessions. `rotation_holder` is
-- the server incarnation rotating it: a kill -9 before the switch leaves
-- the old credentials current, and the next sweep drops the pending ones.
ALTER TABLE bindings
    ADD COLUMN credential_generation integer NOT NULL DEFAULT 0,
    ADD COLUMN credentials_at timestamptz,
    ADD COLUMN pending_sealed_password bytea,
    ADD COLUMN previous_sealed_password bytea,
    ADD COLUMN previous_until timestamptz,
    ADD COLUMN rotation_holder bigint;
CREATE INDEX bindings_rotating ON bindings (id)
    WHERE pending_sealed_password IS NOT NULL OR previous_until IS NOT NULL;

-- A scheduled rotation per environment (`--rotate-every 90d`): its
-- bindings' credentials are rotated once older than `rotate_every_secs`,
-- the replaced ones valid for `rotate_grace_secs`.
ALTER TABLE environments
    ADD COLUMN rotate_every_secs bigint,
    ADD COLUMN rotate_grace_secs bigint;
