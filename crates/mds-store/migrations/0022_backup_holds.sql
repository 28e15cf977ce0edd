-- Holds: what a restore point keeps of a bucket without copying its bytes.
-- A hold counts one reference to each chunk its bucket index lists (as an
-- object version counts them), so the collector keeps those chunks while
-- the restore point lives. The list is kept here, so ending a hold needs
-- only its id: the restore point's own file may be unreadable by then.
CREATE TABLE storage_holds (
    -- The restore point item's id, chosen by the caller.
    id         text PRIMARY KEY,
    -- The bucket it was taken of. No foreign key: a hold outlives its bucket.
    bucket_id  text NOT NULL,
    -- Each chunk once, counted once.
    chunks     bytea[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
