-- Previews with data (issue 18): an environment made `--from` another
-- with `--data schema|copy` (or `--auth-users copy`) is filled from a
-- restore point of its source. `data_copy` says what was asked and what
-- was done (source, policy, masks, the point, per-service results);
-- `data_state` is `copying` until every service is filled, then `ready`
-- or `failed`. Nothing boots in an environment that is not ready.
-- `data_holder` is the server incarnation filling it; a copy whose holder
-- is gone (a kill -9) is started again by the next sweep.
ALTER TABLE environments
    ADD COLUMN data_copy jsonb,
    ADD COLUMN data_state text CHECK (data_state IN ('copying', 'ready', 'failed')),
    ADD COLUMN data_holder bigint;
CREATE INDEX environments_copying ON environments (id)
    WHERE data_state = 'copying' AND deleted_at IS NULL;
