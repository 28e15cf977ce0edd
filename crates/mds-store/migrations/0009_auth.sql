-- End-user auth: the users of an app, per auth binding (one project
-- environment), with their sessions, single-use refresh tokens, one-time
-- email tokens, ES256 signing keys, captured mail and login rate windows.
--
-- Everything hangs off its binding and goes only with it: a binding is
-- deleted only by an explicit, confirmed delete of its service, so the
-- cascade below is that delete, never a side effect.

CREATE TABLE auth_users (
    id                 text PRIMARY KEY,
    binding_id         text NOT NULL REFERENCES bindings (id) ON DELETE CASCADE,
    -- Normalised (trimmed, lower case); unique within the binding only.
    email              text NOT NULL,
    -- argon2id, PHC string.
    password_hash      text NOT NULL,
    role               text NOT NULL DEFAULT 'authenticated',
    user_metadata      jsonb NOT NULL DEFAULT '{}',
    email_confirmed_at timestamptz,
    confirmation_sent_at timestamptz,
    recovery_sent_at   timestamptz,
    last_sign_in_at    timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT auth_users_email_key UNIQUE (binding_id, email)
);

-- A session is a refresh-token family: reusing a spent token revokes it.
CREATE TABLE auth_sessions (
    id          text PRIMARY KEY,
    binding_id  text NOT NULL REFERENCES bindings (id) ON DELETE CASCADE,
    user_id     text NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    refreshed_at timestamptz,
    revoked_at  timestamptz,
    revoked_reason text
);
CREATE INDEX auth_sessions_user ON auth_sessions (user_id);

-- Refresh tokens are opaque; only their SHA-256 is kept.
CREATE TABLE auth_refresh_tokens (
    token_hash  bytea PRIMARY KEY,
    session_id  text NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    used_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auth_refresh_tokens_session ON auth_refresh_tokens (session_id);

-- Email confirmation and password recovery tokens (SHA-256 only), each
-- good only while the user still has the address it was mailed to.
CREATE TABLE auth_one_time_tokens (
    token_hash  bytea PRIMARY KEY,
    user_id     text NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    email       text NOT NULL,
    purpose     text NOT NULL CHECK (purpose IN ('signup', 'recovery')),
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auth_one_time_tokens_user ON auth_one_time_tokens (user_id);

-- ES256 keys: standby (published, not yet signing), active (signing) and
-- retired (published until the tokens it signed have expired).
CREATE TABLE auth_signing_keys (
    kid            text PRIMARY KEY,
    binding_id     text NOT NULL REFERENCES bindings (id) ON DELETE CASCADE,
    state          text NOT NULL CHECK (state IN ('standby', 'active', 'retired')),
    sealed_private bytea NOT NULL,
    public_jwk     jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    activated_at   timestamptz,
    retired_at     timestamptz
);
CREATE UNIQUE INDEX auth_signing_keys_one_active ON auth_signing_keys (binding_id) WHERE state = 'active';
CREATE UNIQUE INDEX auth_signing_keys_one_standby ON auth_signing_keys (binding_id) WHERE state = 'standby';

-- The mail sink of non-production environments (and a record of what was
-- sent over SMTP).
CREATE TABLE auth_mail (
    id          bigserial PRIMARY KEY,
    binding_id  text NOT NULL REFERENCES bindings (id) ON DELETE CASCADE,
    recipient   text NOT NULL,
    subject     text NOT NULL,
    body        text NOT NULL,
    -- 'captured' (sink), 'sent' (SMTP) or 'failed: ...'.
    delivery    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auth_mail_binding ON auth_mail (binding_id, id);

-- Fixed one-minute windows of login attempts, per client address and per
-- account, shared by every replica.
CREATE TABLE auth_rate_windows (
    key          text PRIMARY KEY,
    window_start timestamptz NOT NULL,
    hits         integer NOT NULL
);
