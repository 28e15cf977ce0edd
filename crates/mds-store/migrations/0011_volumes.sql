-- Volumes: filesystems that outlive the sandboxes (and, later, runtime
-- instances) they are attached to, one holder at a time.
--
-- An attachment is the lease: at most one live attachment per volume
-- (unique index), each with a fencing token from a sequence, so a holder
-- whose lease ended can be told from the current one. Stopping or
-- destroying the holder ends its leases.

CREATE TABLE volumes (
    id            text PRIMARY KEY,
    tenant_id     text NOT NULL,
    project_id    text REFERENCES projects (id) ON DELETE SET NULL,
    -- Set for the volume of an attached `volume` data service.
    binding_id    text UNIQUE,
    name          text NOT NULL,
    size_bytes    bigint NOT NULL CHECK (size_bytes > 0),
    -- 'ext4' (a loop-mounted image of exactly that size) or 'dir' (a
    -- directory whose usage is measured, the size not enforced).
    backend       text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX volumes_name_key ON volumes (tenant_id, name);

CREATE SEQUENCE volume_fencing_tokens;

CREATE TABLE volume_attachments (
    id            text PRIMARY KEY,
    volume_id     text NOT NULL REFERENCES volumes (id) ON DELETE CASCADE,
    holder_kind   text NOT NULL,
    holder_id     text NOT NULL,
    mount_path    text NOT NULL,
    fencing_token bigint NOT NULL DEFAULT nextval('volume_fencing_tokens'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    released_at   timestamptz
);
CREATE UNIQUE INDEX volume_attachments_one_holder ON volume_attachments (volume_id)
    WHERE released_at IS NULL;
CREATE INDEX volume_attachments_holder ON volume_attachments (holder_id)
    WHERE released_at IS NULL;

CREATE TABLE volume_snapshots (
    id          text PRIMARY KEY,
    volume_id   text NOT NULL REFERENCES volumes (id) ON DELETE CASCADE,
    size_bytes  bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
