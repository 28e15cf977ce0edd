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
