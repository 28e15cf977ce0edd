//! Redis bindings on an existing server (`--redis-url`): each binding is an
//! ACL user confined to its own key and channel prefix, without the
//! `@admin` and `@dangerous` commands. The trade-off (documented in the
//! README): tenants share one server's memory, CPU and persistence
//! settings, and must put the prefix (`REDIS_KEY_PREFIX`) in front of
//! every key and channel.

use mds_core::kinds::{BindingState, Desired};
use mds_engines::resp::{auth_ping, Reply, Resp};

/// The admin login to an existing Redis 6+ server.
#[derive(Debug, Clone)]
pub struct ExternalRedis {
    pub host: String,
    pub port: u16,
    user: String,
    password: String,
}

/// The prefix a binding's keys and channels must carry.
pub fn key_prefix(resource_name: &str) -> String {
    format!("{resource_name}:")
}

impl ExternalRedis {
    /// Parses `redis://[user[:password]@]host[:port][/db]`. Errors never
    /// repeat the URL: it holds the admin password.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| "--redis-url must start with redis://".to_string())?;
        let rest = rest.split('/').next().unwrap_or_default();
        let (creds, hostport) = match rest.rsplit_once('@') {
            Some((creds, hostport)) => (Some(creds), hostport),
            None => (None, rest),
        };
        let (user, password) = match creds {
            Some(creds) => match creds.split_once(':') {
                Some((user, password)) => (
                    if user.is_empty() { "default" } else { user }.to_string(),
                    password.to_string(),
                ),
                None => ("default".to_string(), creds.to_string()),
            },
            None => ("default".to_string(), String::new()),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) => (
                host.to_string(),
                port.parse()
                    .map_err(|_| "--redis-url has a port that is not a number".to_string())?,
            ),
            None => (hostport.to_string(), 6379),
        };
        if host.is_empty() {
            return Err("--redis-url names no host".to_string());
        }
        Ok(Self {
            host,
            port,
            user,
            password,
        })
    }

    async fn admin(&self) -> Result<Resp, String> {
        let mut conn = Resp::connect(&self.host, self.port)
            .await
            .map_err(|e| format!("cannot reach Redis at {}:{}: {e}", self.host, self.port))?;
        if !self.password.is_empty() {
            conn.call(&["AUTH", &self.user, &self.password])
                .await
                .map_err(|e| e.to_string())?
                .ok()?;
        }
        Ok(conn)
    }

    async fn call(conn: &mut Resp, args: &[&str]) -> Result<Reply, String> {
        conn.call(args).await.map_err(|e| e.to_string())?.ok()
    }

    /// Makes the ACL user match `desired`; returns the state reached,
    /// `None` once deleted.
    /// `resource` names the binding's keys (its prefix) and its users:
    /// `logins` (user, password) are those that may log in now (a
    /// rotation's two); the binding's other turn-taking users are deleted,
    /// which ends their connections.
    pub async fn converge(
        &self,
        resource: &str,
        logins: &[(String, String)],
        desired: Desired,
    ) -> Result<Option<BindingState>, String> {
        let mut conn = self.admin().await?;
        let prefix = key_prefix(resource);
        let every_user: Vec<String> = (0..=2)
            .map(|generation| mds_core::names::login_role(resource, generation))
            .collect();
        match desired {
            Desired::Deleted => {
                for user in &every_user {
                    Self::call(&mut conn, &["ACL", "DELUSER", user]).await?;
                }
                self.drop_keys(&mut conn, &prefix).await?;
                self.save_acl(&mut conn).await;
                Ok(None)
            }
            Desired::Stopped => {
                for (user, _) in logins {
                    Self::call(&mut conn, &["ACL", "SETUSER", user, "off"]).await?;
                    let _ = Self::call(&mut conn, &["CLIENT", "KILL", "USER", user]).await;
                }
                self.save_acl(&mut conn).await;
                Ok(Some(BindingState::Stopped))
            }
            Desired::Running => {
                let key_rule = format!("~{prefix}*");
                let channel_rule = format!("&{prefix}*");
                for (user, password) in logins {
                    let pass_rule = format!(">{password}");
                    Self::call(
                        &mut conn,
                        &[
                            "ACL",
                            "SETUSER",
                            user,
                            "reset",
                            "on",
                            &pass_rule,
                            &key_rule,
                            &channel_rule,
                            "+@all",
                            "-@admin",
                            "-@dangerous",
                        ],
                    )
                    .await?;
                }
                for user in every_user
                    .iter()
                    .filter(|u| !logins.iter().any(|(l, _)| l == *u))
                {
                    Self::call(&mut conn, &["ACL", "DELUSER", user]).await?;
                }
                self.save_acl(&mut conn).await;
                for (user, password) in logins {
                    auth_ping(&self.host, self.port, user, password).await?;
                }
                Ok(Some(BindingState::Running))
            }
        }
    }

    /// Closes the user's connections (a "restart" on a shared server).
    pub async fn disconnect(&self, user: &str) -> Result<(), String> {
        let mut conn = self.admin().await?;
        let _ = Self::call(&mut conn, &["CLIENT", "KILL", "USER", user]).await;
        Ok(())
    }

    /// Persists ACL users when the server keeps an aclfile (otherwise they
    /// live until its restart, and the reconciler does not notice: see the
    /// README).
    async fn save_acl(&self, conn: &mut Resp) {
        let _ = Self::call(conn, &["ACL", "SAVE"]).await;
    }

    /// Deletes every key under `prefix` (an explicit delete of the data).
    async fn drop_keys(&self, conn: &mut Resp, prefix: &str) -> Result<(), String> {
        let pattern = format!("{prefix}*");
        let mut cursor = "0".to_string();
        loop {
            let reply =
                Self::call(conn, &["SCAN", &cursor, "MATCH", &pattern, "COUNT", "1000"]).await?;
            let Reply::Array(Some(parts)) = reply else {
                return Err("unexpected SCAN reply".into());
            };
            let [Reply::Bulk(Some(next)), Reply::Array(Some(keys))] = parts.as_slice() else {
                return Err("unexpected SCAN reply".into());
            };
            let keys: Vec<String> = keys
                .iter()
                .filter_map(|k| match k {
                    Reply::Bulk(Some(k)) => Some(String::from_utf8_lossy(k).into_owned()),
                    _ => None,
                })
                .collect();
            if !keys.is_empty() {
                let mut args = vec!["UNLINK"];
                args.extend(keys.iter().map(String::as_str));
                Self::call(conn, &args).await?;
            }
            cursor = String::from_utf8_lossy(next).into_owned();
            if cursor == "0" {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let r = ExternalRedis::parse("redis://admin:s3cret@10.0.0.5:6380/0").unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.user.as_str()),
            ("10.0.0.5", 6380, "admin")
        );
        let r = ExternalRedis::parse("redis://:pw@localhost").unwrap();
        assert_eq!(
            (r.port, r.user.as_str(), r.password.as_str()),
            (6379, "default", "pw")
        );
        assert!(ExternalRedis::parse("http://x").is_err());
        let err = ExternalRedis::parse("redis://admin:s3cret@h:notaport").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
