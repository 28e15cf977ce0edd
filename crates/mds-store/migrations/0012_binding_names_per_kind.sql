-- A binding's engine-side name (role and database, Redis user, bucket...)
-- must be unique among bindings of its kind only: the Postgres, Redis,
-- Storage, Auth and Volume services of one project environment all take
-- the name `project__environment`.

ALTER TABLE bindings ADD COLUMN kind text;
UPDATE bindings b SET kind = s.kind FROM data_services s WHERE s.id = b.service_id;
ALTER TABLE bindings ALTER COLUMN kind SET NOT NULL;
ALTER TABLE bindings DROP CONSTRAINT bindings_resource_key;
ALTER TABLE bindings ADD CONSTRAINT bindings_resource_key UNIQUE (kind, resource_name);
