//! Identifiers are `<prefix>_<ULID>`: sortable by creation time, readable in
//! logs, and impossible to confuse with a slug (slugs never contain `_`).

/// The kinds of object that get minted ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Project,
    Environment,
    ApiKey,
    Request,
    DataService,
    Binding,
    Bucket,
    Upload,
    /// An app's end user (auth).
    User,
    /// An end user's session: a refresh-token family.
    Session,
    Sandbox,
    Volume,
    /// A volume's attachment to a holder (its lease).
    Attachment,
    Snapshot,
    Deployment,
    /// One published version of a deployment.
    Version,
    /// A process running a version in an environment.
    Instance,
    /// A runtime-env variable (tenant, workspace or project wide).
    RuntimeEnv,
    /// A restore point: one environment's services at one moment.
    RestorePoint,
    /// One service's part of a restore point.
    RestorePointItem,
    Restore,
    BaseBackup,
}

impl IdKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            IdKind::Project => "proj",
            IdKind::Environment => "env",
            IdKind::ApiKey => "key",
            IdKind::Request => "req",
            IdKind::DataService => "ds",
            IdKind::Binding => "bnd",
            IdKind::Bucket => "bkt",
            IdKind::Upload => "upl",
            IdKind::User => "usr",
            IdKind::Session => "sess",
            IdKind::Sandbox => "sbx",
            IdKind::Volume => "vol",
            IdKind::Attachment => "vat",
            IdKind::Snapshot => "snap",
            IdKind::Deployment => "dep",
            IdKind::Version => "ver",
            IdKind::Instance => "ri",
            IdKind::RuntimeEnv => "rtenv",
            IdKind::RestorePoint => "rp",
            IdKind::RestorePointItem => "rpi",
            IdKind::Restore => "rst",
            IdKind::BaseBackup => "base",
        }
    }

    /// A fresh id of this kind.
    pub fn mint(self) -> String {
        format!("{}_{}", self.prefix(), ulid::Ulid::new())
    }

    /// Whether `s` has this kind's shape. Used to tell ids from slugs; it
    /// never rejects input on its own (ids are accepted in any format).
    pub fn matches(self, s: &str) -> bool {
        s.strip_prefix(self.prefix())
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(|ulid| ulid::Ulid::from_string(ulid).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_have_their_prefix_and_parse_back() {
        for kind in [
            IdKind::Project,
            IdKind::Environment,
            IdKind::ApiKey,
            IdKind::Request,
            IdKind::DataService,
            IdKind::Binding,
            IdKind::Bucket,
            IdKind::Upload,
            IdKind::User,
            IdKind::Session,
            IdKind::Sandbox,
            IdKind::Volume,
            IdKind::Attachment,
            IdKind::Snapshot,
            IdKind::Deployment,
            IdKind::Version,
            IdKind::Instance,
            IdKind::RuntimeEnv,
            IdKind::RestorePoint,
            IdKind::RestorePointItem,
            IdKind::Restore,
            IdKind::BaseBackup,
        ] {
            let id = kind.mint();
            assert!(id.starts_with(&format!("{}_", kind.prefix())), "{id}");
            assert!(kind.matches(&id), "{id}");
        }
    }

    #[test]
    fn ids_are_not_confused_across_kinds_or_with_slugs() {
        let project = IdKind::Project.mint();
        assert!(!IdKind::Environment.matches(&project));
        assert!(!IdKind::Project.matches("my-app"));
        assert!(!IdKind::Project.matches("proj_"));
        assert!(!IdKind::Project.matches("proj_not-a-ulid"));
    }

    #[test]
    fn ids_sort_by_creation() {
        let a = IdKind::Project.mint();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = IdKind::Project.mint();
        assert!(a < b);
    }
}
