//! How variables are shown without being revealed.

/// The mask shown for secrets, whatever their length.
pub const SECRET_MASK: &str = "••••••••";

/// Words that make a variable a secret when the client did not say.
const SECRET_WORDS: &[&str] = &[
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "TOKEN",
    "PRIVATE",
    "CREDENTIAL",
    "API_KEY",
    "APIKEY",
    "_KEY",
    "DSN",
    "_URL_UNPOOLED",
];

/// Whether a variable of this name should be masked unless the client says
/// otherwise. URLs that carry credentials (`DATABASE_URL`) are secrets too.
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_WORDS.iter().any(|w| upper.contains(w))
        || matches!(upper.as_str(), "DATABASE_URL" | "REDIS_URL")
}

/// Names that steer how programs start (the dynamic loader, shells,
/// interpreters, tools that run a command they are given) rather than what
/// they read. Setting one can run code in every process that boots with
/// the environment, secrets in hand: writing one needs the right to see
/// those secrets (`env:reveal`). A known list, so defence in depth, not a
/// sandbox.
pub fn steers_programs(name: &str) -> bool {
    const PREFIXES: &[&str] = &["LD_", "DYLD_", "BASH_FUNC_", "GIT_CONFIG_", "MALLOC_"];
    const NAMES: &[&str] = &[
        "BASH_ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "PS4",
        "PROMPT_COMMAND",
        "PYTHONWARNINGS",
        "PYTHONSTARTUP",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONINSPECT",
        "BROWSER",
        "PERL5OPT",
        "PERL5LIB",
        "PERLLIB",
        "NODE_OPTIONS",
        "NODE_PATH",
        "RUBYOPT",
        "RUBYLIB",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_EXEC_PATH",
        "GIT_EXTERNAL_DIFF",
        "PAGER",
        "EDITOR",
        "VISUAL",
        "LESSOPEN",
        "LESSCLOSE",
        "SSH_ASKPASS",
        "GCONV_PATH",
        "LOCPATH",
    ];
    let upper = name.to_ascii_uppercase();
    NAMES.contains(&upper.as_str()) || PREFIXES.iter().any(|p| upper.starts_with(p))
}

/// A list preview: secrets are always masked; other values show their first
/// four characters, and short values are masked so the preview never equals
/// the value.
pub fn preview(value: &str, is_secret: bool) -> String {
    if is_secret || value.chars().count() <= 4 {
        return SECRET_MASK.to_string();
    }
    let head: String = value.chars().take(4).collect();
    format!("{head}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_steering_names() {
        for name in [
            "LD_PRELOAD",
            "ld_preload",
            "BASH_ENV",
            "PYTHONWARNINGS",
            "NODE_OPTIONS",
            "BASH_FUNC_x%%",
            "GIT_SSH_COMMAND",
        ] {
            assert!(steers_programs(name), "{name}");
        }
        for name in [
            "DATABASE_URL",
            "PATH",
            "PORT",
            "FEATURE",
            "LOG_LEVEL",
            "NODE_ENV",
        ] {
            assert!(!steers_programs(name), "{name}");
        }
    }

    #[test]
    fn previews() {
        for (value, secret, shown) in [
            ("https://api.acme.dev", false, "http…"),
            ("abc", false, SECRET_MASK),
            ("https://api.acme.dev", true, SECRET_MASK),
            ("ééééé", false, "éééé…"),
        ] {
            assert_eq!(preview(value, secret), shown, "{value}");
        }
    }

    #[test]
    fn secret_names() {
        for (name, secret) in [
            ("STRIPE_SECRET_KEY", true),
            ("api_token", true),
            ("DATABASE_URL", true),
            ("API_BASE", false),
            ("PORT", false),
            ("KEYBOARD_LAYOUT", false),
        ] {
            assert_eq!(looks_secret(name), secret, "{name}");
        }
    }
}
