//! Environment resolution: what a process sees at boot.
//!
//! [`resolve_env`] is the one pure function that merges every source. Each
//! entry keeps its provenance (and what it overrode), which `mds env
//! explain` prints. Precedence, lowest first:
//!
//! 1. bindings: `DATABASE_URL`, `PG*`, ... of the environment's data services;
//! 2. runtime env (`POST /runtime-env`): the tenant's, then the workspace's,
//!    then the project's, each for all processes or one target;
//! 3. shared variables of the environment;
//! 4. service or deployment variables;
//! 5. run-level env (`mds run -E`, a sandbox's own `env`);
//! 6. platform: the identity mds gives a process (`MIOSA_PROJECT_ID`,
//!    `MIOSA_ENVIRONMENT`, `MIOSA_SANDBOX_ID`, `MIOSA_DEPLOYMENT_ID`,
//!    `MIOSA_VERSION_ID`, `MIOSA_INSTANCE_ID`) and an instance's `PORT`.
//!
//! So a user can override what a binding injects, on purpose, by setting
//! the same name higher up (`explain` shows it); but no variable can make
//! a process lie about where it runs, or listen on another port than the
//! one its router sends to.

use std::collections::BTreeMap;

use crate::kinds::ServiceKind;

/// Where a value comes from. The order is the precedence, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Layer {
    Binding,
    /// Tenant-, workspace- or project-wide defaults: below everything a
    /// project's environment says about itself.
    RuntimeEnv,
    Shared,
    Service,
    Run,
    Platform,
}

impl Layer {
    pub fn label(self) -> &'static str {
        match self {
            Layer::Platform => "platform",
            Layer::Binding => "binding",
            Layer::RuntimeEnv => "runtime_env",
            Layer::Shared => "shared",
            Layer::Service => "service",
            Layer::Run => "run",
        }
    }
}

/// One value offered for a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub value: String,
    pub layer: Layer,
    /// Which binding, service or variable set within the layer.
    pub origin: String,
    pub secret: bool,
}

impl Candidate {
    pub fn new(layer: Layer, origin: &str, name: &str, value: &str, secret: bool) -> Self {
        Self {
            name: name.to_string(),
            value: value.to_string(),
            layer,
            origin: origin.to_string(),
            secret,
        }
    }
}

/// The value a name resolves to, and the candidates it won over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub winner: Candidate,
    /// Lower-precedence candidates for the same name, highest first.
    pub overridden: Vec<Candidate>,
}

/// Merges candidates by precedence: a higher layer wins; within a layer
/// the later candidate wins. The result is sorted by name.
pub fn resolve_env(candidates: impl IntoIterator<Item = Candidate>) -> Vec<Resolved> {
    let mut by_name: BTreeMap<String, Vec<(usize, Candidate)>> = BTreeMap::new();
    for (order, candidate) in candidates.into_iter().enumerate() {
        by_name
            .entry(candidate.name.clone())
            .or_default()
            .push((order, candidate));
    }
    by_name
        .into_values()
        .map(|mut list| {
            list.sort_by(|(ia, a), (ib, b)| b.layer.cmp(&a.layer).then(ib.cmp(ia)));
            let mut list = list.into_iter().map(|(_, c)| c);
            let winner = list.next().expect("every name has a candidate");
            Resolved {
                winner,
                overridden: list.collect(),
            }
        })
        .collect()
}

/// Percent-encodes a URL userinfo or path part.
pub fn url_encode(part: &str) -> String {
    encode(part, b"-._~")
}

/// Percent-encodes an object key for a URL path: like [`url_encode`], but
/// `/` between segments stays.
pub fn url_encode_path(path: &str) -> String {
    encode(path, b"-._~/")
}

fn encode(part: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(part.len());
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The connection details of one Postgres binding.
pub struct PostgresAccess<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub password: &'a str,
    pub database: &'a str,
    /// The pooler's (host, port), when the binding's `DATABASE_URL` goes
    /// through it.
    pub pooler: Option<(&'a str, u16)>,
}

impl PostgresAccess<'_> {
    /// The direct URL.
    pub fn url(&self) -> String {
        self.url_at(self.host, self.port)
    }

    /// `DATABASE_URL`: through the pooler, when there is one.
    pub fn pooled_url(&self) -> String {
        match self.pooler {
            Some((host, port)) => self.url_at(host, port),
            None => self.url(),
        }
    }

    fn url_at(&self, host: &str, port: u16) -> String {
        format!(
            "postgresql://{}:{}@{}:{}/{}",
            url_encode(self.user),
            url_encode(self.password),
            host,
            port,
            url_encode(self.database)
        )
    }

    /// `DATABASE_URL` (pooled, when there is a pooler),
    /// `DATABASE_URL_UNPOOLED` and `PG*` (always direct: migrations,
    /// `LISTEN`, session locks and `pg_dump` need a session of their own),
    /// each prefixed (`ANALYTICS_DATABASE_URL`) for a service that is not
    /// the first of its kind. Values are (name, value, secret).
    pub fn variables(&self, prefix: &str) -> Vec<(String, String, bool)> {
        [
            ("DATABASE_URL", self.pooled_url(), true),
            ("DATABASE_URL_UNPOOLED", self.url(), true),
            ("PGHOST", self.host.to_string(), false),
            ("PGPORT", self.port.to_string(), false),
            ("PGUSER", self.user.to_string(), false),
            ("PGPASSWORD", self.password.to_string(), true),
            ("PGDATABASE", self.database.to_string(), false),
        ]
        .into_iter()
        .map(|(name, value, secret)| (format!("{prefix}{name}"), value, secret))
        .collect()
    }
}

/// The connection details of one Redis binding: its own redis-server, or
/// an ACL user on a shared one whose keys and channels must carry
/// `key_prefix`.
pub struct RedisAccess<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub password: &'a str,
    pub key_prefix: Option<&'a str>,
}

impl RedisAccess<'_> {
    pub fn url(&self) -> String {
        format!(
            "redis://{}:{}@{}:{}/0",
            url_encode(self.user),
            url_encode(self.password),
            self.host,
            self.port
        )
    }

    /// `REDIS_URL`, and `REDIS_KEY_PREFIX` on a shared server.
    pub fn variables(&self, prefix: &str) -> Vec<(String, String, bool)> {
        let mut vars = vec![(format!("{prefix}REDIS_URL"), self.url(), true)];
        if let Some(key_prefix) = self.key_prefix {
            vars.push((
                format!("{prefix}REDIS_KEY_PREFIX"),
                key_prefix.to_string(),
                false,
            ));
        }
        vars
    }
}

/// The S3 details of one storage binding: its bucket and the key pair that
/// opens only it.
pub struct StorageAccess<'a> {
    pub bucket: &'a str,
    pub endpoint: &'a str,
    pub key_id: &'a str,
    pub key_secret: &'a str,
}

impl StorageAccess<'_> {
    /// `STORAGE_*`; for the first storage service of a project (no prefix)
    /// also the names stock AWS SDKs read.
    pub fn variables(&self, prefix: &str) -> Vec<(String, String, bool)> {
        let mut vars = vec![
            (
                format!("{prefix}STORAGE_BUCKET"),
                self.bucket.to_string(),
                false,
            ),
            (
                format!("{prefix}STORAGE_ENDPOINT"),
                self.endpoint.to_string(),
                false,
            ),
            (
                format!("{prefix}STORAGE_KEY_ID"),
                self.key_id.to_string(),
                false,
            ),
            (
                format!("{prefix}STORAGE_KEY_SECRET"),
                self.key_secret.to_string(),
                true,
            ),
        ];
        if prefix.is_empty() {
            vars.extend([
                (
                    "AWS_ENDPOINT_URL_S3".to_string(),
                    self.endpoint.to_string(),
                    false,
                ),
                (
                    "AWS_ACCESS_KEY_ID".to_string(),
                    self.key_id.to_string(),
                    false,
                ),
                (
                    "AWS_SECRET_ACCESS_KEY".to_string(),
                    self.key_secret.to_string(),
                    true,
                ),
                ("AWS_REGION".to_string(), "us-east-1".to_string(), false),
            ]);
        }
        vars
    }
}

/// Where one auth binding serves its end users, and its HS256 secret.
pub struct AuthAccess<'a> {
    pub url: &'a str,
    pub jwt_secret: &'a str,
}

impl AuthAccess<'_> {
    /// `AUTH_JWKS_URL`, `AUTH_URL` (also the tokens' issuer) and
    /// `AUTH_JWT_SECRET`.
    pub fn variables(&self, prefix: &str) -> Vec<(String, String, bool)> {
        vec![
            (
                format!("{prefix}AUTH_JWKS_URL"),
                format!("{}/.well-known/jwks.json", self.url),
                false,
            ),
            (format!("{prefix}AUTH_URL"), self.url.to_string(), false),
            (
                format!("{prefix}AUTH_JWT_SECRET"),
                self.jwt_secret.to_string(),
                true,
            ),
        ]
    }
}

/// The volume of one volume binding.
pub struct VolumeAccess<'a> {
    pub id: &'a str,
    pub name: &'a str,
}

impl VolumeAccess<'_> {
    /// `VOLUME_ID` and `VOLUME_NAME`.
    pub fn variables(&self, prefix: &str) -> Vec<(String, String, bool)> {
        vec![
            (format!("{prefix}VOLUME_ID"), self.id.to_string(), false),
            (format!("{prefix}VOLUME_NAME"), self.name.to_string(), false),
        ]
    }
}

/// The names a binding of `kind` injects (unprefixed; a second service of
/// a kind prefixes each), for messages such as `mds attach`'s. A test keeps
/// it equal to what the `*Access` types above inject.
pub fn injected_names(kind: ServiceKind) -> &'static [&'static str] {
    match kind {
        ServiceKind::Postgres => &[
            "DATABASE_URL",
            "DATABASE_URL_UNPOOLED",
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGPASSWORD",
            "PGDATABASE",
        ],
        ServiceKind::Redis => &["REDIS_URL"],
        ServiceKind::Storage => &[
            "STORAGE_BUCKET",
            "STORAGE_ENDPOINT",
            "STORAGE_KEY_ID",
            "STORAGE_KEY_SECRET",
            "AWS_ENDPOINT_URL_S3",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
        ],
        ServiceKind::Auth => &["AUTH_JWKS_URL", "AUTH_URL", "AUTH_JWT_SECRET"],
        ServiceKind::Volume => &["VOLUME_ID", "VOLUME_NAME"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_names_are_what_each_kind_injects() {
        fn names(vars: Vec<(String, String, bool)>) -> Vec<String> {
            let mut names: Vec<String> = vars.into_iter().map(|(n, _, _)| n).collect();
            names.sort();
            names
        }
        let injected = |kind: ServiceKind| {
            let mut names: Vec<String> =
                injected_names(kind).iter().map(|n| n.to_string()).collect();
            names.sort();
            names
        };
        for kind in ServiceKind::ALL {
            let actual = match kind {
                ServiceKind::Postgres => names(
                    PostgresAccess {
                        host: "h",
                        port: 1,
                        user: "u",
                        password: "p",
                        database: "d",
                        pooler: None,
                    }
                    .variables(""),
                ),
                ServiceKind::Redis => names(
                    RedisAccess {
                        host: "h",
                        port: 1,
                        user: "u",
                        password: "p",
                        key_prefix: None,
                    }
                    .variables(""),
                ),
                ServiceKind::Storage => names(
                    StorageAccess {
                        bucket: "b",
                        endpoint: "e",
                        key_id: "k",
                        key_secret: "s",
                    }
                    .variables(""),
                ),
                ServiceKind::Auth => names(
                    AuthAccess {
                        url: "u",
                        jwt_secret: "s",
                    }
                    .variables(""),
                ),
                ServiceKind::Volume => names(VolumeAccess { id: "i", name: "n" }.variables("")),
            };
            assert_eq!(actual, injected(*kind), "{kind}");
        }
    }

    #[test]
    fn object_keys_are_encoded_per_segment() {
        assert_eq!(url_encode_path("users/1/a b.png"), "users/1/a%20b.png");
        assert_eq!(url_encode_path("ü?#"), "%C3%BC%3F%23");
        assert_eq!(url_encode("a/b"), "a%2Fb");
    }

    fn c(layer: Layer, name: &str, value: &str) -> Candidate {
        Candidate::new(layer, layer.label(), name, value, false)
    }

    /// Each case: candidates in order, then the expected winning value per name.
    fn check(candidates: Vec<Candidate>, expected: &[(&str, &str)]) {
        let resolved = resolve_env(candidates);
        let got: Vec<(&str, &str)> = resolved
            .iter()
            .map(|r| (r.winner.name.as_str(), r.winner.value.as_str()))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn precedence_is_binding_shared_service_run_platform() {
        use Layer::*;
        check(
            vec![
                c(Run, "A", "run"),
                c(Binding, "A", "binding"),
                c(Shared, "A", "shared"),
            ],
            &[("A", "run")],
        );
        check(
            vec![
                c(Shared, "DATABASE_URL", "mine"),
                c(Binding, "DATABASE_URL", "platform"),
            ],
            &[("DATABASE_URL", "mine")],
        );
        check(
            vec![
                c(Service, "X", "svc"),
                c(Shared, "X", "shared"),
                c(Run, "X", "run"),
            ],
            &[("X", "run")],
        );
        // The platform's identity wins over every layer a user writes.
        check(
            vec![
                c(Platform, "MIOSA_ENVIRONMENT", "staging"),
                c(Run, "MIOSA_ENVIRONMENT", "production"),
                c(Shared, "MIOSA_ENVIRONMENT", "production"),
            ],
            &[("MIOSA_ENVIRONMENT", "staging")],
        );
        check(
            vec![
                c(Platform, "MIOSA_ENVIRONMENT", "staging"),
                c(Binding, "PGHOST", "h"),
            ],
            &[("MIOSA_ENVIRONMENT", "staging"), ("PGHOST", "h")],
        );
        // Runtime env overrides a binding and yields to the environment's
        // own shared variables.
        check(
            vec![
                c(Shared, "A", "shared"),
                c(RuntimeEnv, "A", "runtime"),
                c(RuntimeEnv, "B", "runtime"),
                c(Binding, "B", "binding"),
            ],
            &[("A", "shared"), ("B", "runtime")],
        );
        // Within one layer the later candidate wins.
        check(vec![c(Run, "A", "1"), c(Run, "A", "2")], &[("A", "2")]);
    }

    #[test]
    fn provenance_lists_what_was_overridden() {
        let resolved = resolve_env(vec![
            c(Layer::Binding, "A", "b"),
            c(Layer::Run, "A", "r"),
            c(Layer::Shared, "A", "s"),
        ]);
        let layers: Vec<Layer> = resolved[0].overridden.iter().map(|o| o.layer).collect();
        assert_eq!(resolved[0].winner.layer, Layer::Run);
        assert_eq!(layers, [Layer::Shared, Layer::Binding]);
    }

    #[test]
    fn postgres_variables_and_prefixes() {
        let access = PostgresAccess {
            host: "127.0.0.1",
            port: 5432,
            user: "shop__production",
            password: "p@ss/word",
            database: "shop__production",
            pooler: None,
        };
        assert_eq!(
            access.url(),
            "postgresql://shop__production:p%40ss%2Fword@127.0.0.1:5432/shop__production"
        );
        let names: Vec<String> = access
            .variables("ANALYTICS_")
            .into_iter()
            .map(|v| v.0)
            .collect();
        assert!(names.contains(&"ANALYTICS_DATABASE_URL".to_string()));
        assert!(names.contains(&"ANALYTICS_PGPASSWORD".to_string()));
        assert_eq!(access.variables("")[0].0, "DATABASE_URL");
        // Without a pooler both URLs are direct; with one, only
        // DATABASE_URL goes through it.
        let value = |access: &PostgresAccess, name: &str| {
            access
                .variables("")
                .into_iter()
                .find(|v| v.0 == name)
                .map(|v| v.1)
                .unwrap()
        };
        assert_eq!(value(&access, "DATABASE_URL"), access.url());
        let pooled = PostgresAccess {
            pooler: Some(("127.0.0.1", 6500)),
            ..access
        };
        assert_eq!(
            value(&pooled, "DATABASE_URL"),
            "postgresql://shop__production:p%40ss%2Fword@127.0.0.1:6500/shop__production"
        );
        assert_eq!(value(&pooled, "DATABASE_URL_UNPOOLED"), pooled.url());
        assert_eq!(value(&pooled, "PGPORT"), "5432");
    }

    fn names(vars: Vec<(String, String, bool)>) -> Vec<String> {
        vars.into_iter().map(|v| v.0).collect()
    }

    #[test]
    fn every_kinds_variable_names_and_secrets() {
        let redis = RedisAccess {
            host: "127.0.0.1",
            port: 6400,
            user: "shop__production",
            password: "p@ss",
            key_prefix: None,
        };
        assert_eq!(
            redis.url(),
            "redis://shop__production:p%40ss@127.0.0.1:6400/0"
        );
        assert_eq!(names(redis.variables("CACHE_")), ["CACHE_REDIS_URL"]);
        assert!(redis.variables("")[0].2, "REDIS_URL holds the password");
        let shared = RedisAccess {
            key_prefix: Some("shop__production:"),
            ..redis
        };
        assert_eq!(
            names(shared.variables("")),
            ["REDIS_URL", "REDIS_KEY_PREFIX"]
        );

        let storage = StorageAccess {
            bucket: "shop--production",
            endpoint: "http://127.0.0.1:9000",
            key_id: "MDSX",
            key_secret: "s",
        };
        assert_eq!(storage.variables("").len(), 8, "with the AWS names");
        let files = storage.variables("FILES_");
        assert_eq!(files.len(), 4, "the AWS names only once per project");
        let secrets: Vec<&str> = files.iter().filter(|v| v.2).map(|v| v.0.as_str()).collect();
        assert_eq!(secrets, ["FILES_STORAGE_KEY_SECRET"]);

        let auth = AuthAccess {
            url: "http://h/auth/v1/p/e",
            jwt_secret: "x",
        };
        let vars = auth.variables("");
        assert_eq!(vars[0].1, "http://h/auth/v1/p/e/.well-known/jwks.json");
        assert_eq!(
            names(vars),
            ["AUTH_JWKS_URL", "AUTH_URL", "AUTH_JWT_SECRET"]
        );

        let volume = VolumeAccess {
            id: "vol_1",
            name: "n",
        };
        assert_eq!(
            names(volume.variables("DATA_")),
            ["DATA_VOLUME_ID", "DATA_VOLUME_NAME"]
        );
    }
}

/// A `${{...}}` reference inside a variable's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference<'a> {
    /// `${{shared.NAME}}`: a shared variable of the environment.
    Shared(&'a str),
    /// `${{Service.NAME}}`: a variable another service exposes.
    Service(&'a str, &'a str),
    /// `${{NAME}}`: another variable of the same service.
    Own(&'a str),
    /// `${{secret(N)}}`: N random characters, drawn when the value is set.
    Secret(usize),
}

/// A reference that cannot be parsed, naming the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad reference ${{{{{0}}}}}: use ${{{{shared.NAME}}}}, ${{{{Service.NAME}}}}, ${{{{NAME}}}} or ${{{{secret(N)}}}} (N from 1 to 256)")]
pub struct BadReference(pub String);

fn parse_reference(inner: &str) -> Result<Reference<'_>, BadReference> {
    let text = inner.trim();
    let bad = || BadReference(text.to_string());
    if let Some(n) = text
        .strip_prefix("secret(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let n: usize = n.trim().parse().map_err(|_| bad())?;
        return if (1..=256).contains(&n) {
            Ok(Reference::Secret(n))
        } else {
            Err(bad())
        };
    }
    let ident = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b' ')
    };
    match text.split_once('.') {
        Some(("shared", name)) if ident(name) => Ok(Reference::Shared(name)),
        Some((service, name)) if ident(service) && ident(name) => {
            Ok(Reference::Service(service, name))
        }
        None if ident(text) => Ok(Reference::Own(text)),
        _ => Err(bad()),
    }
}

/// Replaces every `${{...}}` in `value` with what `lookup` says; text
/// outside references is kept as is.
pub fn expand_references(
    value: &str,
    mut lookup: impl FnMut(&Reference<'_>) -> Result<String, BadReference>,
) -> Result<String, BadReference> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let end = after
            .find("}}")
            .ok_or_else(|| BadReference(after.to_string()))?;
        let reference = parse_reference(&after[..end])?;
        out.push_str(&lookup(&reference)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod reference_tests {
    use super::*;

    #[test]
    fn references_expand_and_bad_ones_are_named() {
        let expanded = expand_references(
            "url=${{Postgres.DATABASE_URL}}&base=${{ shared.API_BASE }}&own=${{PORT}}",
            |r| {
                Ok(match r {
                    Reference::Service("Postgres", "DATABASE_URL") => "pg://x".into(),
                    Reference::Shared("API_BASE") => "https://a".into(),
                    Reference::Own("PORT") => "80".into(),
                    other => panic!("{other:?}"),
                })
            },
        )
        .unwrap();
        assert_eq!(expanded, "url=pg://x&base=https://a&own=80");
        assert_eq!(
            parse_reference("secret(32)").unwrap(),
            Reference::Secret(32)
        );
        for bad in ["secret(0)", "secret(x)", "a.b.c;", "", "x'y"] {
            assert!(parse_reference(bad).is_err(), "{bad}");
        }
        assert!(expand_references("${{unclosed", |_| Ok(String::new())).is_err());
        assert_eq!(
            expand_references("plain $ {{x}}", |_| Ok(String::new())).unwrap(),
            "plain $ {{x}}"
        );
    }
}
