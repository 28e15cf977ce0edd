-- Standalone databases and buckets (MIOSA `POST /databases` and
-- `POST /storage/buckets` without a project): each tenant has one hidden
-- project that holds them, with one environment. Attaching one to a real
-- project environment later moves its service and binding there; the
-- engine-side database, role and bucket stay as they are.

ALTER TABLE projects ADD COLUMN standalone boolean NOT NULL DEFAULT false;
CREATE UNIQUE INDEX projects_one_standalone ON projects (tenant_id) WHERE standalone;

ALTER TABLE data_services ADD COLUMN standalone boolean NOT NULL DEFAULT false;

-- Services per environment (the SDK's model): a service name may be bound
-- in some environments only, so two services of a kind may inject the same
-- names as long as no environment has both. That rule spans rows (a
-- service's environments are its bindings), so attach checks it under a
-- lock on the project row instead of this constraint.
ALTER TABLE data_services DROP CONSTRAINT data_services_prefix_key;
