//! End-user auth records (migration 0009): users, sessions (refresh-token
//! families), one-time email tokens, signing keys, captured mail and login
//! rate windows. Tokens arrive here already hashed; private keys already
//! sealed.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Row;

use crate::data_services::{
    binding_from_row, service_from_row, BINDING_COLUMNS, BINDING_COLUMN_COUNT, SERVICE_COLUMNS,
    SERVICE_COLUMN_COUNT,
};
use crate::{BindingRow, DataServiceRow, Result, Store};

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: String,
    pub binding_id: String,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub user_metadata: Value,
    pub email_confirmed_at: Option<DateTime<Utc>>,
    pub confirmation_sent_at: Option<DateTime<Utc>>,
    pub recovery_sent_at: Option<DateTime<Utc>>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const USER_COLUMNS: &str =
    "u.id, u.binding_id, u.email, u.password_hash, u.role, u.user_metadata, \
     u.email_confirmed_at, u.confirmation_sent_at, u.recovery_sent_at, u.last_sign_in_at, \
     u.created_at, u.updated_at";

fn user_from_row(row: &Row) -> UserRow {
    UserRow {
        id: row.get(0),
        binding_id: row.get(1),
        email: row.get(2),
        password_hash: row.get(3),
        role: row.get(4),
        user_metadata: row.get(5),
        email_confirmed_at: row.get(6),
        confirmation_sent_at: row.get(7),
        recovery_sent_at: row.get(8),
        last_sign_in_at: row.get(9),
        created_at: row.get(10),
        updated_at: row.get(11),
    }
}

pub struct NewUser<'a> {
    pub id: &'a str,
    pub binding_id: &'a str,
    pub email: &'a str,
    pub password_hash: &'a str,
    pub user_metadata: &'a Value,
    pub confirmed: bool,
}

/// What a user update changes; `None` leaves a field alone.
#[derive(Default)]
pub struct UserPatch<'a> {
    pub email: Option<&'a str>,
    pub password_hash: Option<&'a str>,
    /// Merged into the stored metadata (top-level keys replaced).
    pub user_metadata: Option<&'a Value>,
    /// A changed email must be confirmed again.
    pub reconfirm_email: bool,
}

/// What presenting a refresh token did.
#[derive(Debug)]
pub enum Refresh {
    /// Spent; a new token of the same family was stored.
    Rotated {
        session_id: String,
        user: Box<UserRow>,
    },
    /// Already spent: its whole family (session) is now revoked.
    Reused,
    /// Unknown, of another binding, or of a revoked session.
    Invalid,
}

/// Which sessions a logout ends.
pub enum LogoutScope<'a> {
    /// This session only.
    Local(&'a str),
    /// Every session of the user.
    Global,
    /// Every session of the user but this one.
    Others(&'a str),
}

#[derive(Debug, Clone)]
pub struct SigningKeyRow {
    pub kid: String,
    pub state: String,
    pub sealed_private: Vec<u8>,
    pub public_jwk: Value,
    pub retired_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct MailRow {
    pub id: i64,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub delivery: String,
    pub created_at: DateTime<Utc>,
}

impl Store {
    /// The auth binding of `project_id` in the environment with id or slug
    /// `environment`, with its service (whose config holds the settings)
    /// and the project's slug.
    pub async fn auth_binding(
        &self,
        project_id: &str,
        environment: &str,
    ) -> Result<Option<(DataServiceRow, BindingRow, String)>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {SERVICE_COLUMNS}, {BINDING_COLUMNS}, p.slug
                 FROM bindings b
                 JOIN data_services s ON s.id = b.service_id
                 JOIN projects p ON p.id = s.project_id
                 JOIN environments e ON e.id = b.environment_id
                 WHERE s.project_id = $1 AND s.kind = 'auth' AND NOT s.deleting
                   AND e.deleted_at IS NULL AND (e.id = $2 OR e.slug = $2)"
            ))
            .await?;
        let row = client
            .query_opt(&statement, &[&project_id, &environment])
            .await?;
        Ok(row.map(|r| {
            (
                service_from_row(&r),
                binding_from_row(&r, SERVICE_COLUMN_COUNT),
                r.get(SERVICE_COLUMN_COUNT + BINDING_COLUMN_COUNT),
            )
        }))
    }

    /// Replaces a service's settings.
    pub async fn set_service_config(&self, service_id: &str, config: &Value) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE data_services SET config = $2, updated_at = now() WHERE id = $1",
                &[&service_id, config],
            )
            .await?;
        Ok(())
    }

    pub async fn create_user(&self, user: &NewUser<'_>) -> Result<UserRow> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO auth_users AS u (id, binding_id, email, password_hash,
                         user_metadata, email_confirmed_at)
                     VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN now() END)
                     RETURNING {USER_COLUMNS}"
                ),
                &[
                    &user.id,
                    &user.binding_id,
                    &user.email,
                    &user.password_hash,
                    user.user_metadata,
                    &user.confirmed,
                ],
            )
            .await?;
        Ok(user_from_row(&row))
    }

    /// A user of `binding_id` by normalised email or by id.
    pub async fn auth_user(
        &self,
        binding_id: &str,
        email_or_id: UserKey<'_>,
    ) -> Result<Option<UserRow>> {
        let client = self.client().await?;
        let (column, value) = match email_or_id {
            UserKey::Email(email) => ("email", email),
            UserKey::Id(id) => ("id", id),
        };
        let statement = client
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM auth_users u WHERE u.binding_id = $1 AND u.{column} = $2"
            ))
            .await?;
        let row = client.query_opt(&statement, &[&binding_id, &value]).await?;
        Ok(row.as_ref().map(user_from_row))
    }

    /// Signup over an address nobody has confirmed: whoever signed up
    /// with it before never proved they own it, so the new password and
    /// metadata replace theirs, and any session of theirs ends.
    pub async fn replace_unconfirmed_user(
        &self,
        binding_id: &str,
        email: &str,
        password_hash: &str,
        user_metadata: &Value,
    ) -> Result<Option<UserRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "WITH target AS (
                         SELECT id FROM auth_users
                         WHERE binding_id = $1 AND email = $2 AND email_confirmed_at IS NULL),
                     ended AS (
                         UPDATE auth_sessions SET revoked_at = now(),
                             revoked_reason = 'signup over an unconfirmed address'
                         WHERE user_id IN (SELECT id FROM target) AND revoked_at IS NULL),
                     spent AS (
                         DELETE FROM auth_one_time_tokens
                         WHERE user_id IN (SELECT id FROM target))
                     UPDATE auth_users u SET password_hash = $3, user_metadata = $4,
                         updated_at = now()
                     WHERE u.id IN (SELECT id FROM target)
                     RETURNING {USER_COLUMNS}"
                ),
                &[&binding_id, &email, &password_hash, user_metadata],
            )
            .await?;
        Ok(row.as_ref().map(user_from_row))
    }

    /// Users of a binding, newest first, and how many there are.
    pub async fn auth_users(
        &self,
        binding_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<UserRow>, i64)> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {USER_COLUMNS} FROM auth_users u WHERE u.binding_id = $1
                     ORDER BY u.created_at DESC, u.id DESC LIMIT $2 OFFSET $3"
                ),
                &[&binding_id, &limit, &offset],
            )
            .await?;
        let total: i64 = client
            .query_one(
                "SELECT count(*) FROM auth_users WHERE binding_id = $1",
                &[&binding_id],
            )
            .await?
            .get(0);
        Ok((rows.iter().map(user_from_row).collect(), total))
    }

    /// Deletes a user with its sessions and tokens; false if there was none.
    pub async fn delete_auth_user(&self, binding_id: &str, id: &str) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM auth_users WHERE binding_id = $1 AND id = $2",
                &[&binding_id, &id],
            )
            .await?;
        Ok(n > 0)
    }

    pub async fn update_auth_user(
        &self,
        binding_id: &str,
        id: &str,
        patch: &UserPatch<'_>,
    ) -> Result<Option<UserRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "WITH changed AS (
                         DELETE FROM auth_one_time_tokens
                         WHERE user_id = $2 AND $3::text IS NOT NULL
                           AND $3 IS DISTINCT FROM (SELECT email FROM auth_users WHERE id = $2))
                     UPDATE auth_users u SET
                         email = coalesce($3, u.email),
                         password_hash = coalesce($4, u.password_hash),
                         user_metadata = u.user_metadata || coalesce($5, '{{}}'::jsonb),
                         email_confirmed_at = CASE WHEN $6 AND $3 IS DISTINCT FROM u.email
                             AND $3 IS NOT NULL THEN NULL ELSE u.email_confirmed_at END,
                         updated_at = now()
                     WHERE u.binding_id = $1 AND u.id = $2
                     RETURNING {USER_COLUMNS}"
                ),
                &[
                    &binding_id,
                    &id,
                    &patch.email,
                    &patch.password_hash,
                    &patch.user_metadata,
                    &patch.reconfirm_email,
                ],
            )
            .await?;
        Ok(row.as_ref().map(user_from_row))
    }

    /// Opens a session for `user_id` with its first refresh token, and
    /// records the sign-in: one statement, one round trip.
    pub async fn create_session(
        &self,
        session_id: &str,
        binding_id: &str,
        user_id: &str,
        refresh_hash: &[u8],
    ) -> Result<()> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "WITH session AS (
                     INSERT INTO auth_sessions (id, binding_id, user_id) VALUES ($1, $2, $3)
                     RETURNING id),
                 token AS (
                     INSERT INTO auth_refresh_tokens (token_hash, session_id)
                     SELECT $4, id FROM session),
                 signed_in AS (
                     UPDATE auth_users SET last_sign_in_at = now() WHERE id = $3)
                 SELECT 1",
            )
            .await?;
        client
            .execute(
                &statement,
                &[&session_id, &binding_id, &user_id, &refresh_hash],
            )
            .await?;
        Ok(())
    }

    /// The user of a live session of `binding_id`: what an access token
    /// names, checked against revocation in one round trip.
    pub async fn session_user(
        &self,
        binding_id: &str,
        session_id: &str,
        user_id: &str,
    ) -> Result<Option<UserRow>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM auth_sessions s JOIN auth_users u ON u.id = s.user_id
                 WHERE s.id = $1 AND s.binding_id = $2 AND s.user_id = $3
                   AND s.revoked_at IS NULL"
            ))
            .await?;
        let row = client
            .query_opt(&statement, &[&session_id, &binding_id, &user_id])
            .await?;
        Ok(row.as_ref().map(user_from_row))
    }

    /// Spends a refresh token and stores its successor, or revokes the
    /// family if it was spent already. Within `reuse_grace_secs` of its
    /// first use a token may be spent again (another successor, as GoTrue
    /// allows): two tabs refreshing at once, or a retry after a lost
    /// answer, are not theft.
    pub async fn refresh_session(
        &self,
        binding_id: &str,
        token_hash: &[u8],
        next_hash: &[u8],
        reuse_grace_secs: f64,
    ) -> Result<Refresh> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "SELECT t.session_id,
                        t.used_at IS NOT NULL
                            AND t.used_at < now() - make_interval(secs => $3),
                        s.revoked_at IS NOT NULL, s.user_id
                 FROM auth_refresh_tokens t JOIN auth_sessions s ON s.id = t.session_id
                 WHERE t.token_hash = $1 AND s.binding_id = $2
                 FOR UPDATE OF t, s",
                &[&token_hash, &binding_id, &reuse_grace_secs],
            )
            .await?
        else {
            return Ok(Refresh::Invalid);
        };
        let session_id: String = row.get(0);
        let (used, revoked): (bool, bool) = (row.get(1), row.get(2));
        let user_id: String = row.get(3);
        if revoked {
            return Ok(Refresh::Invalid);
        }
        if used {
            tx.execute(
                "UPDATE auth_sessions SET revoked_at = now(),
                     revoked_reason = 'refresh token reused'
                 WHERE id = $1",
                &[&session_id],
            )
            .await?;
            tx.commit().await?;
            return Ok(Refresh::Reused);
        }
        tx.execute(
            "UPDATE auth_refresh_tokens SET used_at = coalesce(used_at, now())
             WHERE token_hash = $1",
            &[&token_hash],
        )
        .await?;
        tx.execute(
            "INSERT INTO auth_refresh_tokens (token_hash, session_id) VALUES ($1, $2)",
            &[&next_hash, &session_id],
        )
        .await?;
        tx.execute(
            "UPDATE auth_sessions SET refreshed_at = now() WHERE id = $1",
            &[&session_id],
        )
        .await?;
        let user = tx
            .query_one(
                &format!("SELECT {USER_COLUMNS} FROM auth_users u WHERE u.id = $1"),
                &[&user_id],
            )
            .await?;
        tx.commit().await?;
        Ok(Refresh::Rotated {
            session_id,
            user: Box::new(user_from_row(&user)),
        })
    }

    /// Revokes sessions of `user_id`; returns how many.
    pub async fn revoke_sessions(
        &self,
        binding_id: &str,
        user_id: &str,
        scope: LogoutScope<'_>,
        reason: &str,
    ) -> Result<u64> {
        let client = self.client().await?;
        let (session, keep): (Option<&str>, bool) = match scope {
            LogoutScope::Local(id) => (Some(id), false),
            LogoutScope::Global => (None, false),
            LogoutScope::Others(id) => (Some(id), true),
        };
        let n = client
            .execute(
                "UPDATE auth_sessions SET revoked_at = now(), revoked_reason = $5
                 WHERE binding_id = $1 AND user_id = $2 AND revoked_at IS NULL
                   AND ($3::text IS NULL OR (id = $3) <> $4)",
                &[&binding_id, &user_id, &session, &keep, &reason],
            )
            .await?;
        Ok(n)
    }

    /// Stores a one-time token for `user_id` (replacing earlier ones of the
    /// same purpose) and records when it was sent.
    pub async fn create_one_time_token(
        &self,
        user_id: &str,
        purpose: &str,
        token_hash: &[u8],
        ttl_secs: f64,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "DELETE FROM auth_one_time_tokens WHERE user_id = $1 AND purpose = $2",
            &[&user_id, &purpose],
        )
        .await?;
        tx.execute(
            "INSERT INTO auth_one_time_tokens (token_hash, user_id, email, purpose, expires_at)
             SELECT $1, id, email, $3, now() + make_interval(secs => $4)
             FROM auth_users WHERE id = $2",
            &[&token_hash, &user_id, &purpose, &ttl_secs],
        )
        .await?;
        let column = if purpose == "signup" {
            "confirmation_sent_at"
        } else {
            "recovery_sent_at"
        };
        tx.execute(
            &format!("UPDATE auth_users SET {column} = now() WHERE id = $1"),
            &[&user_id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Spends a one-time token of `binding_id`: returns its user (with the
    /// email confirmed, which either purpose proves) and purpose, or
    /// `None` if it is unknown, expired, or was mailed to an address the
    /// user no longer has.
    pub async fn consume_one_time_token(
        &self,
        binding_id: &str,
        token_hash: &[u8],
    ) -> Result<Option<(UserRow, String)>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "DELETE FROM auth_one_time_tokens t USING auth_users u
                 WHERE t.token_hash = $1 AND u.id = t.user_id AND u.binding_id = $2
                 RETURNING t.user_id, t.purpose, t.expires_at > now() AND t.email = u.email",
                &[&token_hash, &binding_id],
            )
            .await?
        else {
            return Ok(None);
        };
        let (user_id, purpose, live): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
        if !live {
            tx.commit().await?;
            return Ok(None);
        }
        let user = tx
            .query_one(
                &format!(
                    "UPDATE auth_users u SET email_confirmed_at = coalesce(u.email_confirmed_at, now()),
                         updated_at = now()
                     WHERE u.id = $1 RETURNING {USER_COLUMNS}"
                ),
                &[&user_id],
            )
            .await?;
        tx.commit().await?;
        Ok(Some((user_from_row(&user), purpose)))
    }

    /// Signing keys of a binding: standby, active, and retired ones still
    /// within `retired_for_secs` of their retirement.
    pub async fn signing_keys(
        &self,
        binding_id: &str,
        retired_for_secs: f64,
    ) -> Result<Vec<SigningKeyRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT kid, state, sealed_private, public_jwk, retired_at
                 FROM auth_signing_keys
                 WHERE binding_id = $1 AND (state <> 'retired'
                     OR retired_at > now() - make_interval(secs => $2))
                 ORDER BY created_at",
                &[&binding_id, &retired_for_secs],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| SigningKeyRow {
                kid: r.get(0),
                state: r.get(1),
                sealed_private: r.get(2),
                public_jwk: r.get(3),
                retired_at: r.get(4),
            })
            .collect())
    }

    /// Adds a key in `state` unless the binding has one in that state.
    pub async fn add_signing_key(
        &self,
        binding_id: &str,
        kid: &str,
        state: &str,
        sealed_private: &[u8],
        public_jwk: &Value,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO auth_signing_keys (kid, binding_id, state, sealed_private, public_jwk,
                     activated_at)
                 SELECT $1, $2, $3, $4, $5, CASE WHEN $3 = 'active' THEN now() END
                 WHERE NOT EXISTS (SELECT 1 FROM auth_signing_keys
                                   WHERE binding_id = $2 AND state = $3)",
                &[&kid, &binding_id, &state, &sealed_private, public_jwk],
            )
            .await?;
        Ok(())
    }

    /// One rotation step: active -> retired, standby -> active, and the
    /// new key becomes the standby. Tokens signed by the retired key stay
    /// verifiable through the JWKS until they expire.
    pub async fn rotate_signing_keys(
        &self,
        binding_id: &str,
        kid: &str,
        sealed_private: &[u8],
        public_jwk: &Value,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Serialises rotations of one binding.
        tx.execute(
            "SELECT 1 FROM bindings WHERE id = $1 FOR UPDATE",
            &[&binding_id],
        )
        .await?;
        tx.execute(
            "UPDATE auth_signing_keys SET state = 'retired', retired_at = now()
             WHERE binding_id = $1 AND state = 'active'",
            &[&binding_id],
        )
        .await?;
        tx.execute(
            "UPDATE auth_signing_keys SET state = 'active', activated_at = now()
             WHERE binding_id = $1 AND state = 'standby'",
            &[&binding_id],
        )
        .await?;
        tx.execute(
            "INSERT INTO auth_signing_keys (kid, binding_id, state, sealed_private, public_jwk)
             VALUES ($1, $2, 'standby', $3, $4)",
            &[&kid, &binding_id, &sealed_private, public_jwk],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn add_mail(
        &self,
        binding_id: &str,
        recipient: &str,
        subject: &str,
        body: &str,
        delivery: &str,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO auth_mail (binding_id, recipient, subject, body, delivery)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&binding_id, &recipient, &subject, &body, &delivery],
            )
            .await?;
        Ok(())
    }

    /// The newest `limit` messages of a binding, newest first.
    pub async fn mail(&self, binding_id: &str, limit: i64) -> Result<Vec<MailRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, recipient, subject, body, delivery, created_at FROM auth_mail
                 WHERE binding_id = $1 ORDER BY id DESC LIMIT $2",
                &[&binding_id, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| MailRow {
                id: r.get(0),
                recipient: r.get(1),
                subject: r.get(2),
                body: r.get(3),
                delivery: r.get(4),
                created_at: r.get(5),
            })
            .collect())
    }

    /// Counts one hit against each key's current one-minute window and
    /// returns the counts, with the seconds left in the window.
    pub async fn hit_rate_windows(&self, keys: &[String]) -> Result<Vec<(String, i32, f64)>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO auth_rate_windows AS w (key, window_start, hits)
                 SELECT k, date_trunc('minute', now()), 1 FROM unnest($1::text[]) AS k
                 ON CONFLICT (key) DO UPDATE SET
                     hits = CASE WHEN w.window_start = EXCLUDED.window_start
                                 THEN w.hits + 1 ELSE 1 END,
                     window_start = EXCLUDED.window_start
                 RETURNING key, hits,
                     extract(epoch FROM window_start + interval '1 minute' - now())::float8",
            )
            .await?;
        let rows = client.query(&statement, &[&keys]).await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Removes rate windows, tokens, ended sessions and mail that no longer
    /// matter.
    pub async fn sweep_auth(&self) -> Result<u64> {
        let client = self.client().await?;
        let windows = client
            .execute(
                "DELETE FROM auth_rate_windows WHERE window_start < now() - interval '5 minutes'",
                &[],
            )
            .await?;
        let tokens = client
            .execute(
                "DELETE FROM auth_one_time_tokens WHERE expires_at < now()",
                &[],
            )
            .await?;
        // Spent refresh tokens are kept a week to catch reuse; sessions
        // ended a month ago go with their tokens; mail after a month.
        let spent = client
            .execute(
                "DELETE FROM auth_refresh_tokens WHERE used_at < now() - interval '7 days'",
                &[],
            )
            .await?;
        let ended = client
            .execute(
                "DELETE FROM auth_sessions WHERE revoked_at < now() - interval '30 days'",
                &[],
            )
            .await?;
        let mail = client
            .execute(
                "DELETE FROM auth_mail WHERE created_at < now() - interval '30 days'",
                &[],
            )
            .await?;
        Ok(windows + tokens + spent + ended + mail)
    }
}

/// How a user is looked up.
#[derive(Clone, Copy)]
pub enum UserKey<'a> {
    Email(&'a str),
    Id(&'a str),
}
