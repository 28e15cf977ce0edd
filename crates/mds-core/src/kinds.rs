//! The closed sets of provisioning: data-service kinds, binding states and
//! what a binding should be. Strings only at the edges (the wire and the
//! database columns `data_services.kind`, `bindings.state` and
//! `bindings.desired`); inside, these enums with exhaustive matches, so a
//! new kind or state is a compile error wherever it needs a decision.

use std::fmt;
use std::str::FromStr;

/// A value read from the wire or the database that names no member of the
/// set; it names the set and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {set} {value:?} (known: {})", .known.join(", "))]
pub struct UnknownValue {
    pub set: &'static str,
    pub value: String,
    pub known: &'static [&'static str],
}

/// One closed set of lowercase words: the enum, its `ALL` list, `as_str`,
/// `FromStr`, `Display` and serde as the same words.
macro_rules! words {
    (
        $(#[$meta:meta])*
        $name:ident, $set:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $word:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($word => Ok($name::$variant),)+
                    other => Err(UnknownValue {
                        set: $set,
                        value: other.to_string(),
                        known: &[$($word),+],
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

words! {
    /// What a data service is (`data_services.kind`).
    ServiceKind, "data-service kind" {
        Postgres = "postgres",
        Redis = "redis",
        Storage = "storage",
        Auth = "auth",
        Volume = "volume",
    }
}

words! {
    /// What a binding has, as last observed (`bindings.state`).
    BindingState, "binding state" {
        /// Written with the row; also a running binding that drifted and
        /// is being repaired.
        Provisioning = "provisioning",
        /// Was running before this server started; its engine process is
        /// being brought back and has not yet answered with the binding's
        /// own credentials.
        Starting = "starting",
        /// A real client round trip with its own credentials worked.
        Running = "running",
        Stopped = "stopped",
        /// Named by the column's comment since migration 0003; no code
        /// writes it today (a deleted binding's row goes).
        Deleting = "deleting",
        /// The last attempt failed (`last_error`); retried with backoff.
        Error = "error",
    }
}

words! {
    /// How a deployment version runs (`deployment_versions.kind`).
    ReleaseKind, "release kind" {
        /// Files the router serves.
        Static = "static",
        /// A process on `$PORT` behind the router.
        Dynamic = "dynamic",
    }
}

words! {
    /// What a binding should be (`bindings.desired`).
    Desired, "desired state" {
        Running = "running",
        Stopped = "stopped",
        /// Its data is to be dropped, then its row.
        Deleted = "deleted",
    }
}

impl ServiceKind {
    /// The `engine` label of the MIOSA data-service shape.
    pub const fn engine_label(self) -> &'static str {
        match self {
            ServiceKind::Postgres => "postgresql",
            ServiceKind::Storage => "s3",
            ServiceKind::Redis => "redis",
            ServiceKind::Auth => "auth",
            ServiceKind::Volume => "volume",
        }
    }

    /// Whether clients hold sessions that a restart closes. Storage and
    /// auth requests are independent; a volume has no clients of its own.
    pub const fn has_sessions(self) -> bool {
        match self {
            ServiceKind::Postgres | ServiceKind::Redis => true,
            ServiceKind::Storage | ServiceKind::Auth | ServiceKind::Volume => false,
        }
    }

    /// Whether the binding is served by an engine process of its own
    /// (managed Redis), which a restarted server must bring back before
    /// the binding is connectable again.
    pub const fn has_own_process(self) -> bool {
        match self {
            ServiceKind::Redis => true,
            ServiceKind::Postgres
            | ServiceKind::Storage
            | ServiceKind::Auth
            | ServiceKind::Volume => false,
        }
    }

    /// The kind a user's word names: its own name or a common alias
    /// (`pg`, `postgresql`, `s3`, `bucket`, `volumes`).
    pub fn from_alias(word: &str) -> Option<Self> {
        match word {
            "postgres" | "postgresql" | "pg" => Some(ServiceKind::Postgres),
            "redis" => Some(ServiceKind::Redis),
            "storage" | "s3" | "bucket" => Some(ServiceKind::Storage),
            "auth" => Some(ServiceKind::Auth),
            "volume" | "volumes" => Some(ServiceKind::Volume),
            _ => None,
        }
    }
}

impl Desired {
    /// The state a binding has once it converged to this, `None` when its
    /// row is gone.
    pub const fn settled_state(self) -> Option<BindingState> {
        match self {
            Desired::Running => Some(BindingState::Running),
            Desired::Stopped => Some(BindingState::Stopped),
            Desired::Deleted => None,
        }
    }
}

impl BindingState {
    /// Whether a binding in this state is settled for `desired`: reached
    /// it, or failed (the reason is on the row and retries go on).
    pub fn is_settled(self, desired: Desired) -> bool {
        match self {
            BindingState::Error => true,
            BindingState::Provisioning
            | BindingState::Starting
            | BindingState::Running
            | BindingState::Stopped
            | BindingState::Deleting => desired.settled_state() == Some(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every member round-trips through its string, its serde form and
    /// its Display; a word outside the set is refused, naming it.
    fn check<T>(all: &[T], unknown: &str, set: &str)
    where
        T: Copy
            + PartialEq
            + fmt::Debug
            + fmt::Display
            + FromStr<Err = UnknownValue>
            + serde::Serialize
            + serde::de::DeserializeOwned,
    {
        for &v in all {
            let text = v.to_string();
            assert_eq!(text.parse::<T>().unwrap(), v);
            assert_eq!(text, text.to_lowercase());
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), v);
        }
        let err = unknown.parse::<T>().unwrap_err();
        assert_eq!(err.value, unknown);
        let message = err.to_string();
        assert!(
            message.contains(set) && message.contains(unknown),
            "{message}"
        );
        assert!(serde_json::from_str::<T>(&format!("\"{unknown}\"")).is_err());
    }

    #[test]
    fn string_forms_round_trip_and_unknown_words_are_named() {
        check(ServiceKind::ALL, "mysql", "data-service kind");
        check(BindingState::ALL, "paused", "binding state");
        check(Desired::ALL, "archived", "desired state");
        // Case matters: the database holds lowercase words only.
        assert!("Postgres".parse::<ServiceKind>().is_err());
    }

    #[test]
    fn the_database_words_are_the_ones_of_the_migrations() {
        let kinds: Vec<&str> = ServiceKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(kinds, ["postgres", "redis", "storage", "auth", "volume"]);
        let desired: Vec<&str> = Desired::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(desired, ["running", "stopped", "deleted"]);
        for state in ["provisioning", "running", "stopped", "deleting", "error"] {
            assert!(state.parse::<BindingState>().is_ok(), "{state}");
        }
    }

    #[test]
    fn per_kind_facts() {
        let cases = [
            (
                ServiceKind::Postgres,
                "postgresql",
                true,
                &["pg", "postgresql"][..],
            ),
            (ServiceKind::Redis, "redis", true, &["redis"][..]),
            (ServiceKind::Storage, "s3", false, &["s3", "bucket"][..]),
            (ServiceKind::Auth, "auth", false, &["auth"][..]),
            (ServiceKind::Volume, "volume", false, &["volumes"][..]),
        ];
        for (kind, engine, sessions, aliases) in cases {
            assert_eq!(kind.engine_label(), engine);
            assert_eq!(kind.has_sessions(), sessions);
            assert_eq!(ServiceKind::from_alias(kind.as_str()), Some(kind));
            for alias in aliases {
                assert_eq!(ServiceKind::from_alias(alias), Some(kind), "{alias}");
            }
        }
        assert_eq!(ServiceKind::from_alias("mysql"), None);
    }

    #[test]
    fn settled_means_reached_or_failed() {
        use BindingState::*;
        let cases = [
            (Running, Desired::Running, true),
            (Starting, Desired::Running, false),
            (Provisioning, Desired::Running, false),
            (Stopped, Desired::Running, false),
            (Stopped, Desired::Stopped, true),
            (Error, Desired::Running, true),
            (Running, Desired::Deleted, false),
            (Error, Desired::Deleted, true),
        ];
        for (state, desired, settled) in cases {
            assert_eq!(state.is_settled(desired), settled, "{state} for {desired}");
        }
    }
}
