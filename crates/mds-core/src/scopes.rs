//! API-key scopes. A key holds a set; `*` holds them all.

use crate::FieldError;

/// Every scope a key can hold. Later issues add storage and deployments.
pub const ALL_SCOPES: &[&str] = &[
    "projects:read",
    "projects:write",
    "env:read",
    "env:write",
    "env:reveal",
    "api-keys:read",
    "api-keys:write",
    "storage:read",
    "storage:write",
    "auth:read",
    "auth:write",
    "deployments:read",
    "deployments:write",
    "backups:read",
    "backups:write",
    "backups:restore",
    "audit:read",
];

/// What a key gets when it is created without a scope list: everyday work,
/// without revealing secrets or managing other keys.
pub const DEFAULT_SCOPES: &[&str] = &["projects:read", "projects:write", "env:read", "env:write"];

pub const ADMIN: &str = "*";

/// A validated set of scopes, as held by a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scopes(Vec<String>);

impl Scopes {
    /// Parses and normalises (sorted, deduplicated) a client-given list.
    pub fn parse(field: &'static str, raw: &[String]) -> Result<Self, FieldError> {
        let mut scopes = Vec::with_capacity(raw.len());
        for scope in raw {
            if scope != ADMIN && !ALL_SCOPES.contains(&scope.as_str()) {
                return Err(FieldError::new(
                    field,
                    format!(
                        "unknown scope {scope:?}; known scopes are \"*\" and {}",
                        ALL_SCOPES.join(", ")
                    ),
                ));
            }
            scopes.push(scope.clone());
        }
        if scopes.is_empty() {
            return Err(FieldError::new(field, "must name at least one scope"));
        }
        scopes.sort();
        scopes.dedup();
        Ok(Self(scopes))
    }

    /// Scopes as stored: trusted, no validation.
    pub fn from_stored(scopes: Vec<String>) -> Self {
        Self(scopes)
    }

    pub fn defaults() -> Self {
        Self(DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect())
    }

    pub fn admin() -> Self {
        Self(vec![ADMIN.to_string()])
    }

    pub fn allows(&self, scope: &str) -> bool {
        self.0.iter().any(|s| s == ADMIN || s == scope)
    }

    /// The first scope of `other` this set does not hold: a key may only
    /// hand out what it has.
    pub fn first_missing<'a>(&self, other: &'a Scopes) -> Option<&'a str> {
        other.0.iter().map(String::as_str).find(|s| !self.allows(s))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(list: &[&str]) -> Scopes {
        Scopes::parse(
            "scopes",
            &list.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap()
    }

    #[test]
    fn admin_allows_everything() {
        let admin = Scopes::admin();
        for scope in ALL_SCOPES {
            assert!(admin.allows(scope));
        }
    }

    #[test]
    fn a_plain_key_lacks_reveal_and_storage() {
        let plain = Scopes::defaults();
        assert!(plain.allows("env:read"));
        assert!(!plain.allows("env:reveal"));
        assert!(!plain.allows("storage:read"));
    }

    #[test]
    fn parse_rejects_unknown_and_empty_and_normalises() {
        assert!(Scopes::parse("scopes", &["projects:rule".into()]).is_err());
        assert!(Scopes::parse("scopes", &[]).is_err());
        assert_eq!(
            scopes(&["env:read", "env:read", "projects:read"]).as_slice(),
            &["env:read".to_string(), "projects:read".to_string()]
        );
    }

    #[test]
    fn no_escalation() {
        let holder = scopes(&["projects:read", "api-keys:write"]);
        assert_eq!(holder.first_missing(&scopes(&["projects:read"])), None);
        assert_eq!(
            holder.first_missing(&scopes(&["env:reveal"])),
            Some("env:reveal")
        );
        assert_eq!(holder.first_missing(&Scopes::admin()), Some("*"));
        assert_eq!(Scopes::admin().first_missing(&Scopes::admin()), None);
    }
}
