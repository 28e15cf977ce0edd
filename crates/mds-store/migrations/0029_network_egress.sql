-- Network isolation (issue 19): whether a project's sandboxes and runtime
-- instances reach the outside (`allow`, through pasta) or only their own
-- data services (`none`). Private and link-local ranges are refused
-- either way.
ALTER TABLE projects
    ADD COLUMN network_egress text NOT NULL DEFAULT 'allow'
        CHECK (network_egress IN ('allow', 'none'));
