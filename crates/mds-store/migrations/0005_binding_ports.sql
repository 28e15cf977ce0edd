-- A binding served by its own engine process (managed Redis) keeps its
-- port across restarts, so that injected URLs stay valid.
ALTER TABLE bindings ADD COLUMN port integer;
