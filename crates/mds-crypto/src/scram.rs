//! SCRAM-SHA-256 verifiers as PostgreSQL stores them
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, RFC 5803).
//! Knowing whether a stored verifier still opens with a password lets a
//! converge keep it: the pooler authenticates with a copy of it, which a
//! fresh salt would make stale.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Whether `verifier` was made from `password`. Anything that is not a
/// well-formed SCRAM-SHA-256 verifier does not match. Passwords are taken
/// as bytes (no SASLprep): mds's own are ASCII alphanumerics, for which
/// SASLprep changes nothing.
pub fn verifier_matches(verifier: &str, password: &str) -> bool {
    let Some(rest) = verifier.strip_prefix("SCRAM-SHA-256$") else {
        return false;
    };
    let Some((params, keys)) = rest.split_once('$') else {
        return false;
    };
    let (Some((iterations, salt)), Some((stored, _server))) =
        (params.split_once(':'), keys.split_once(':'))
    else {
        return false;
    };
    let (Ok(iterations), Ok(salt), Ok(stored)) = (
        iterations.parse::<u32>(),
        STANDARD.decode(salt),
        STANDARD.decode(stored),
    ) else {
        return false;
    };
    // A bound on the work an odd verifier can make us do.
    if iterations == 0 || iterations > 1_000_000 {
        return false;
    }
    let salted = hi(password.as_bytes(), &salt, iterations);
    let client_key = hmac(&salted, b"Client Key");
    Sha256::digest(client_key).as_slice() == stored.as_slice()
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any size");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one block (RFC 5802's `Hi`).
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(password).expect("HMAC takes keys of any size");
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = mac.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, b) in out.iter_mut().zip(u) {
            *o ^= b;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_postgres_verifiers() {
        // Made by PostgreSQL 15 (`CREATE ROLE t1 PASSWORD 'p1'`).
        let pg = "SCRAM-SHA-256$4096:l5orYS8E6g5Zce1t3a/O+g==$Ete68TI/WVj1zGb4qSYXe/P+zyX8LazeX0g2wkOTr9o=:/cNJWVsXNJt6c1xL2LeOiV4cqhfHBYU2Hx5ysIDkEC4=";
        assert!(verifier_matches(pg, "p1"));
        assert!(!verifier_matches(pg, "p2"));
        for odd in [
            "",
            "md5abc",
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$0:AA==$AA==:AA==",
            "SCRAM-SHA-256$4096:!!$AA==:AA==",
            "SCRAM-SHA-256$99999999:AA==$AA==:AA==",
        ] {
            assert!(!verifier_matches(odd, "p1"), "{odd}");
        }
    }
}
