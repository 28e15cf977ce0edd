-- The connection pooler (issue 17): how each Postgres binding's clients
-- reach its database. `transaction` (the default, as MIOSA's) and
-- `session` inject DATABASE_URL through the pooler; `off` injects it
-- direct. pool_size caps the binding's server connections (NULL: the
-- server's default). A binding made later for a new environment starts
-- from the service's config (`pool_mode`, `pool_size`), which an attach
-- writes.
ALTER TABLE bindings
    ADD COLUMN pool_mode text NOT NULL DEFAULT 'transaction'
        CHECK (pool_mode IN ('transaction', 'session', 'off')),
    ADD COLUMN pool_size integer CHECK (pool_size BETWEEN 1 AND 10000);
