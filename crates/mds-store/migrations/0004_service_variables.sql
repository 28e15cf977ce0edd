-- Variables of a data service in one environment (MIOSA project services:
-- `PUT /services/{id}/variables`). Values may hold references such as
-- ${{Postgres.DATABASE_URL}}, resolved at boot. Sealed like shared variables.

CREATE TABLE service_variables (
    service_id     text NOT NULL REFERENCES data_services (id) ON DELETE CASCADE,
    environment_id text NOT NULL REFERENCES environments (id),
    name           text NOT NULL,
    sealed_value   bytea NOT NULL,
    is_secret      boolean NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service_id, environment_id, name)
);
