//! What bucket names and object keys may be.

/// S3's bucket naming rules: 3-63 characters of lowercase letters, digits,
/// `-` and `.`, starting and ending with a letter or digit, no `.` next to
/// another `.` or a `-`, not shaped like an IP address.
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let edges = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(3..=63).contains(&name.len())
        || !valid_chars
        || !edges(name.as_bytes().first())
        || !edges(name.as_bytes().last())
        || name.contains("..")
        || name.contains("-.")
        || name.contains(".-")
        || name.parse::<std::net::Ipv4Addr>().is_ok()
    {
        return Err(format!(
            "invalid bucket name {name:?}: use 3-63 lowercase letters, digits, '-' or '.', \
             starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Longest key, in bytes (S3's limit).
pub const MAX_KEY_BYTES: usize = 1024;

/// Why a key is refused. Keys are names in an index, never paths, so `../`
/// or a leading `/` are stored and returned as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProblem {
    Empty,
    TooLong,
    ControlCharacter,
}

impl std::fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyProblem::Empty => "object keys cannot be empty",
            KeyProblem::TooLong => "object keys are at most 1024 bytes of UTF-8",
            KeyProblem::ControlCharacter => {
                "object keys cannot contain control characters (U+0000-U+001F, U+007F)"
            }
        })
    }
}

pub fn check_key(key: &str) -> Result<(), KeyProblem> {
    if key.is_empty() {
        return Err(KeyProblem::Empty);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyProblem::TooLong);
    }
    if key.chars().any(|c| c.is_ascii_control()) {
        return Err(KeyProblem::ControlCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my-app--production", "a.b.c", "x1-y2"] {
            assert!(check_bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "ABC",
            "-abc",
            "abc-",
            "a..b",
            "foo.-bar",
            "foo-.bar",
            "192.168.0.1",
            "a_b",
            &"a".repeat(64),
        ] {
            assert!(check_bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys() {
        for ok in [
            "a",
            "../etc/passwd",
            "/leading",
            "ünï/cødé ✓",
            &"k".repeat(1024),
        ] {
            assert_eq!(check_key(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_key(""), Err(KeyProblem::Empty));
        assert_eq!(check_key(&"k".repeat(1025)), Err(KeyProblem::TooLong));
        assert_eq!(check_key("a\nb"), Err(KeyProblem::ControlCharacter));
        assert_eq!(check_key("a\0b"), Err(KeyProblem::ControlCharacter));
    }
}
