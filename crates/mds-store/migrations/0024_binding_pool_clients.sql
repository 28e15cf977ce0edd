-- The pooler's per-binding client limit (issue 17): how many client
-- connections one Postgres binding may hold open on the pooler at once
-- (NULL: the server's default, --pool-max-clients). It keeps one tenant's
-- connection storm from taking every client slot the pooler has. A binding
-- made later starts from the service's config (`pool_max_clients`).
ALTER TABLE bindings
    ADD COLUMN pool_max_clients integer CHECK (pool_max_clients BETWEEN 1 AND 1000000);
