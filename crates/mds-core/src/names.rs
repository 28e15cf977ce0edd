//! Names and slugs that clients choose, and the rules they must follow.
//!
//! Slugs are lowercase DNS labels, so they can become host names
//! (`<deployment>.<environment>.localhost`) and database names later.

use crate::FieldError;

pub const MAX_PROJECT_NAME: usize = 100;
pub const MAX_SLUG: usize = 48;
pub const MAX_ENVIRONMENT_NAME: usize = 63;
pub const MAX_VARIABLE_NAME: usize = 255;
pub const MAX_VARIABLE_VALUE: usize = 64 * 1024;
pub const MAX_DESCRIPTION: usize = 2000;

/// A human name: not blank, bounded, no control characters.
pub fn validate_display_name(
    field: &'static str,
    name: &str,
    max: usize,
) -> Result<String, FieldError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(FieldError::new(field, "must not be blank"));
    }
    if trimmed.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(trimmed.to_string())
}

/// A slug: `[a-z0-9]` runs joined by single hyphens, at most 48 characters.
pub fn validate_slug(field: &'static str, slug: &str) -> Result<(), FieldError> {
    let ok = !slug.is_empty()
        && slug.len() <= MAX_SLUG
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-')
        && !slug.contains("--");
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "must be 1-{MAX_SLUG} lowercase letters, digits and single hyphens, \
                 starting and ending with a letter or digit (got {slug:?})"
            ),
        ))
    }
}

/// The slug a name suggests: lowercase ASCII, every other run of characters
/// turned into one hyphen. `None` when nothing usable is left (a name in
/// another script), so the caller can fall back to an id-derived slug.
pub fn slugify(name: &str) -> Option<String> {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.truncate(MAX_SLUG);
    let slug = slug.trim_end_matches('-').to_string();
    (!slug.is_empty()).then_some(slug)
}

/// Environment names: `production`, `staging`, `qa`, `preview/pr-42`.
/// Lowercase segments of letters, digits and hyphens, joined by `/`.
pub fn validate_environment_name(field: &'static str, name: &str) -> Result<(), FieldError> {
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
    };
    if name.len() <= MAX_ENVIRONMENT_NAME && name.split('/').all(segment_ok) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "must be at most {MAX_ENVIRONMENT_NAME} characters: lowercase letters, digits, \
                 '-' and '.', in segments separated by '/' (like \"qa\" or \"preview/pr-42\"); \
                 got {name:?}"
            ),
        ))
    }
}

/// The slug of an environment name: `preview/pr-42` -> `preview-pr-42`.
pub fn environment_slug(name: &str) -> String {
    slugify(name).unwrap_or_else(|| "env".to_string())
}

/// What an environment is for, derived from its name unless given.
pub fn environment_kind(name: &str) -> &'static str {
    match name {
        crate::tenancy::PRODUCTION => "production",
        crate::tenancy::STAGING => "staging",
        n if n.starts_with("preview/") || n.starts_with("preview-") => "preview",
        _ => "custom",
    }
}

pub const ENVIRONMENT_KINDS: [&str; 4] = ["production", "staging", "preview", "custom"];

/// Variable names are what a shell accepts: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn validate_variable_name(field: &'static str, name: &str) -> Result<(), FieldError> {
    let mut bytes = name.bytes();
    let ok = name.len() <= MAX_VARIABLE_NAME
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "must start with a letter or '_' and hold only letters, digits and '_' \
                 (at most {MAX_VARIABLE_NAME}); got {name:?}"
            ),
        ))
    }
}

pub fn validate_variable_value(field: &'static str, value: &str) -> Result<(), FieldError> {
    if value.len() > MAX_VARIABLE_VALUE {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_VARIABLE_VALUE} bytes"),
        ));
    }
    if value.contains('\0') {
        return Err(FieldError::new(field, "must not contain NUL bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_roles_take_turns_within_63_bytes() {
        assert_eq!(login_role("shop__production", 0), "shop__production");
        assert_eq!(login_role("shop__production", 1), "shop__production_r1");
        assert_eq!(login_role("shop__production", 2), "shop__production_r2");
        assert_eq!(login_role("shop__production", 3), "shop__production_r1");
        let long = "x".repeat(63);
        let (one, two) = (login_role(&long, 1), login_role(&long, 2));
        assert!(one.len() <= 63 && two.len() <= 63 && one != two && one != long);
    }

    /// One table, one helper: each case is (input, accepted?).
    fn check(rule: impl Fn(&str) -> Result<(), FieldError>, cases: &[(&str, bool)]) {
        for (input, accepted) in cases {
            assert_eq!(rule(input).is_ok(), *accepted, "input {input:?}");
        }
    }

    #[test]
    fn slugs() {
        check(
            |s| validate_slug("slug", s),
            &[
                ("my-app", true),
                ("a", true),
                ("app2", true),
                ("", false),
                ("-app", false),
                ("app-", false),
                ("my--app", false),
                ("My-App", false),
                ("my_app", false),
                ("my app", false),
                (&"a".repeat(48), true),
                (&"a".repeat(49), false),
            ],
        );
    }

    #[test]
    fn slugify_makes_valid_slugs() {
        for (name, slug) in [
            ("My App", Some("my-app")),
            ("  Clinic IQ!! v2 ", Some("clinic-iq-v2")),
            ("日本", None),
            ("a__b", Some("a-b")),
        ] {
            assert_eq!(slugify(name).as_deref(), slug, "{name}");
        }
        let long = slugify(&"word ".repeat(40)).unwrap();
        validate_slug("slug", &long).unwrap();
    }

    #[test]
    fn environment_names() {
        check(
            |s| validate_environment_name("name", s),
            &[
                ("production", true),
                ("qa", true),
                ("preview/pr-42", true),
                ("eu.west", true),
                ("", false),
                ("Prod", false),
                ("preview/", false),
                ("/x", false),
                ("a//b", false),
                ("-qa", false),
                ("qa ", false),
                ("../etc", false),
                (&"a".repeat(64), false),
            ],
        );
        assert_eq!(environment_slug("preview/pr-42"), "preview-pr-42");
        assert_eq!(environment_kind("preview/pr-42"), "preview");
        assert_eq!(environment_kind("qa"), "custom");
    }

    #[test]
    fn variable_names() {
        check(
            |s| validate_variable_name("name", s),
            &[
                ("DATABASE_URL", true),
                ("_x", true),
                ("a1", true),
                ("1A", false),
                ("A-B", false),
                ("", false),
                ("A B", false),
                ("É", false),
            ],
        );
    }

    #[test]
    fn display_names() {
        assert_eq!(
            validate_display_name("name", "  Clinic IQ ", 100).unwrap(),
            "Clinic IQ"
        );
        assert!(validate_display_name("name", "   ", 100).is_err());
        assert!(validate_display_name("name", "a\nb", 100).is_err());
        assert!(validate_display_name("name", &"x".repeat(101), 100).is_err());
    }
}

/// The engine-side name (database and role) of a binding:
/// `<project>__<environment>[__<service>]`, lowercase `[a-z0-9_]`. The
/// double underscore cannot occur inside a part (slugs have single hyphens,
/// turned into underscores), so distinct bindings never share a name. Long
/// names are cut to PostgreSQL's 63 bytes with a hash of the whole kept at
/// the end.
pub fn resource_name(project_slug: &str, environment_slug: &str, service: Option<&str>) -> String {
    let part = |s: &str| -> String {
        slugify(s)
            .unwrap_or_else(|| "x".to_string())
            .replace('-', "_")
    };
    let mut name = format!("{}__{}", part(project_slug), part(environment_slug));
    if let Some(service) = service {
        name = format!("{name}__{}", part(service));
    }
    // PostgreSQL reserves role names that start with "pg_".
    if name.starts_with("pg_") {
        name = format!("u_{name}");
    }
    const MAX: usize = 63;
    if name.len() > MAX {
        let hash = fnv1a(name.as_bytes());
        name.truncate(MAX - 9);
        name = format!("{}_{hash:08x}", name.trim_end_matches('_'));
    }
    name
}

/// The Postgres role a binding's clients log in with at credential
/// `generation`: its resource name (the owner of its database and of every
/// object in it) at 0, then two login roles that take turns (`_r1` at odd
/// generations, `_r2` at even ones), members of the owner that act as it,
/// so a rotation never changes who owns what.
pub fn login_role(resource_name: &str, generation: i32) -> String {
    if generation <= 0 {
        return resource_name.to_string();
    }
    let suffix = if generation % 2 == 1 { "_r1" } else { "_r2" };
    let mut name = format!("{resource_name}{suffix}");
    const MAX: usize = 63;
    if name.len() > MAX {
        let hash = fnv1a(resource_name.as_bytes());
        let mut base = resource_name.to_string();
        base.truncate(MAX - 12);
        name = format!("{}_{hash:08x}{suffix}", base.trim_end_matches('_'));
    }
    name
}

/// The names a data service may have: a short display name such as
/// `Postgres` or `analytics db` (letters, digits, spaces, `-`, `_`), which
/// also gives its variable prefix (`ANALYTICS_DB_`), its reference
/// (`${{Postgres.DATABASE_URL}}`) and part of its resource names.
pub fn validate_service_name(field: &'static str, name: &str) -> Result<(), FieldError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SLUG
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "must be 1-{MAX_SLUG} letters, digits, spaces, '-' or '_', starting with a \
                 letter or digit (got {name:?})"
            ),
        ))
    }
}

/// `analytics-db` or `Analytics DB` -> `ANALYTICS_DB_`.
pub fn env_prefix(service_name: &str) -> String {
    let slug = slugify(service_name).unwrap_or_else(|| "service".to_string());
    format!("{}_", slug.replace('-', "_").to_ascii_uppercase())
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod resource_tests {
    use super::*;

    #[test]
    fn resource_names_are_distinct_safe_and_bounded() {
        assert_eq!(
            resource_name("my-app", "production", None),
            "my_app__production"
        );
        assert_eq!(
            resource_name("my-app", "preview-pr-1", Some("analytics")),
            "my_app__preview_pr_1__analytics"
        );
        assert_ne!(
            resource_name("my-app", "preview-pr-1", None),
            resource_name("my-app-preview", "pr-1", None)
        );
        let long = resource_name(&"a".repeat(48), &"b".repeat(48), Some(&"c".repeat(48)));
        assert!(long.len() <= 63, "{long}");
        assert_ne!(
            long,
            resource_name(&"a".repeat(48), &"b".repeat(48), Some(&"d".repeat(48)))
        );
        for name in [long, resource_name("x'; DROP", "y\"", None)] {
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        }
        assert_eq!(env_prefix("analytics-db"), "ANALYTICS_DB_");
        assert_eq!(env_prefix("Analytics DB"), "ANALYTICS_DB_");
        for good in ["Postgres", "analytics db", "cache_2"] {
            validate_service_name("name", good).unwrap();
        }
        for bad in ["", " x", "x'; DROP", "a\"b", "a;b", "-x", "é"] {
            assert!(validate_service_name("name", bad).is_err(), "{bad}");
        }
        assert_eq!(
            resource_name("pg-x", "production", None),
            "u_pg_x__production"
        );
    }
}
