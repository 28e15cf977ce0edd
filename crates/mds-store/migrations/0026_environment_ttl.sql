-- Previews with a time to live (issue 18): an environment with expires_at
-- is purged once that time has passed (a restore point of its data is
-- taken first, and the expiry is an audit event). Production and staging
-- never have one; mds refuses it.
ALTER TABLE environments ADD COLUMN expires_at timestamptz;
CREATE INDEX environments_expiring ON environments (expires_at)
    WHERE expires_at IS NOT NULL AND deleted_at IS NULL;
