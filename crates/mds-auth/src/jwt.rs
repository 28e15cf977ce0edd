//! JSON Web Tokens: HS256 with the binding's `AUTH_JWT_SECRET` (its UTF-8
//! bytes are the key, as the MIOSA SDK and jsonwebtoken verify), or ES256
//! with a P-256 key published in the JWKS.
//!
//! Verification trusts nothing in the token to choose its key: `alg` picks
//! between the HMAC secret and the ES256 keys the binding has, `none` and
//! every other algorithm are refused, and ES256 needs a known `kid`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve::rand_core::OsRng;
use serde_json::{json, Value};
use sha2::Sha256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the token's signing key is unknown")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token was issued for another audience or issuer")]
    Issuer,
}

/// How a new token is signed.
pub enum Signer<'a> {
    Hs256(&'a [u8]),
    Es256 { kid: &'a str, key: &'a SigningKey },
}

/// What a token may be verified with.
pub struct VerifyKeys<'a> {
    /// Any of these HS256 secrets (a rotation's two during its grace
    /// period); none: HS256 tokens are refused.
    pub hs256: &'a [&'a [u8]],
    pub es256: &'a [(String, VerifyingKey)],
}

pub fn sign(claims: &Value, signer: &Signer<'_>) -> String {
    let header = match signer {
        Signer::Hs256(_) => json!({ "alg": "HS256", "typ": "JWT" }),
        Signer::Es256 { kid, .. } => json!({ "alg": "ES256", "typ": "JWT", "kid": kid }),
    };
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let signature = match signer {
        Signer::Hs256(secret) => hmac_sha256(secret, input.as_bytes()),
        Signer::Es256 { key, .. } => {
            let signature: Signature = key.sign(input.as_bytes());
            signature.to_bytes().to_vec()
        }
    };
    format!("{input}.{}", B64.encode(signature))
}

fn hmac_sha256(key: &[u8], input: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(input);
    mac.finalize().into_bytes().to_vec()
}

/// The claims of a token whose signature, expiry and issuer check out.
/// The issuer is `AUTH_URL`; only its path (`/auth/v1/PROJECT/ENV`) must
/// match, so a change of the server's public URL logs nobody out.
pub fn verify(
    token: &str,
    keys: &VerifyKeys<'_>,
    issuer_path: &str,
    now: i64,
) -> Result<Value, JwtError> {
    let mut parts = token.trim().split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Value = decode_json(header_b64)?;
    let signature = B64.decode(signature_b64).map_err(|_| JwtError::Malformed)?;
    let input = &token.trim()[..header_b64.len() + 1 + payload_b64.len()];
    match header["alg"].as_str() {
        Some("HS256") => {
            if keys.hs256.is_empty() {
                return Err(JwtError::Algorithm);
            }
            let signed_by = |secret: &&[u8]| {
                let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
                mac.update(input.as_bytes());
                mac.verify_slice(&signature).is_ok()
            };
            if !keys.hs256.iter().any(signed_by) {
                return Err(JwtError::Signature);
            }
        }
        Some("ES256") => {
            let kid = header["kid"].as_str().ok_or(JwtError::UnknownKey)?;
            let (_, key) = keys
                .es256
                .iter()
                .find(|(k, _)| k == kid)
                .ok_or(JwtError::UnknownKey)?;
            let signature = Signature::from_slice(&signature).map_err(|_| JwtError::Signature)?;
            key.verify(input.as_bytes(), &signature)
                .map_err(|_| JwtError::Signature)?;
        }
        _ => return Err(JwtError::Algorithm),
    }
    let claims: Value = decode_json(payload_b64)?;
    match claims["exp"].as_i64() {
        Some(exp) if exp > now => {}
        Some(_) => return Err(JwtError::Expired),
        None => return Err(JwtError::Malformed),
    }
    if !claims["iss"]
        .as_str()
        .is_some_and(|iss| iss.ends_with(issuer_path))
    {
        return Err(JwtError::Issuer);
    }
    Ok(claims)
}

fn decode_json(part: &str) -> Result<Value, JwtError> {
    let bytes = B64.decode(part).map_err(|_| JwtError::Malformed)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(JwtError::Malformed)
    }
}

/// A new ES256 key: (kid, private scalar bytes, public JWK).
pub fn new_es256_key() -> (String, Vec<u8>, Value) {
    let key = SigningKey::random(&mut OsRng);
    let kid = hex::encode(rand::random::<[u8; 8]>());
    let jwk = public_jwk(&kid, key.verifying_key());
    (kid, key.to_bytes().to_vec(), jwk)
}

pub fn signing_key(private: &[u8]) -> Option<SigningKey> {
    SigningKey::from_slice(private).ok()
}

pub fn public_jwk(kid: &str, key: &VerifyingKey) -> Value {
    let point = key.to_encoded_point(false);
    json!({
        "kty": "EC",
        "crv": "P-256",
        "alg": "ES256",
        "use": "sig",
        "key_ops": ["verify"],
        "kid": kid,
        "x": B64.encode(point.x().expect("uncompressed point")),
        "y": B64.encode(point.y().expect("uncompressed point")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "/auth/v1/p/e";

    fn claims(exp: i64) -> Value {
        json!({ "sub": "usr_1", "exp": exp, "iat": 0, "iss": ISS })
    }

    #[test]
    fn hs256_and_es256_round_trip_and_forgeries_fail() {
        let secret = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let (kid, private, _) = new_es256_key();
        let key = signing_key(&private).unwrap();
        let es = vec![(kid.clone(), *key.verifying_key())];
        let secrets: [&[u8]; 1] = [secret];
        let keys = VerifyKeys {
            hs256: &secrets,
            es256: &es,
        };
        let hs = sign(&claims(100), &Signer::Hs256(secret));
        assert_eq!(verify(&hs, &keys, ISS, 50).unwrap()["sub"], "usr_1");
        let es_token = sign(
            &claims(100),
            &Signer::Es256 {
                kid: &kid,
                key: &key,
            },
        );
        assert_eq!(verify(&es_token, &keys, ISS, 50).unwrap()["sub"], "usr_1");

        assert_eq!(verify(&hs, &keys, ISS, 100), Err(JwtError::Expired));
        assert_eq!(
            verify(&hs, &keys, "/auth/v1/p/other", 50),
            Err(JwtError::Issuer)
        );
        let another: [&[u8]; 1] = [b"another secret"];
        let other = VerifyKeys {
            hs256: &another,
            es256: &[],
        };
        assert_eq!(verify(&hs, &other, ISS, 50), Err(JwtError::Signature));
        // A rotation's grace period: either secret verifies.
        let both: [&[u8]; 2] = [b"another secret", secret];
        let overlap = VerifyKeys {
            hs256: &both,
            es256: &[],
        };
        assert_eq!(verify(&hs, &overlap, ISS, 50).unwrap()["sub"], "usr_1");
        assert_eq!(
            verify(&es_token, &other, ISS, 50),
            Err(JwtError::UnknownKey)
        );
        let es_only = VerifyKeys {
            hs256: &[],
            es256: &es,
        };
        assert_eq!(verify(&hs, &es_only, ISS, 50), Err(JwtError::Algorithm));
        assert!(verify(&es_token, &es_only, ISS, 50).is_ok());

        // A changed payload, alg none, and garbage.
        let parts: Vec<&str> = hs.split('.').collect();
        let forged_payload = B64.encode(claims(10_000).to_string());
        let changed = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert_eq!(verify(&changed, &keys, ISS, 50), Err(JwtError::Signature));
        let none_header = B64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let none = format!("{none_header}.{}.", parts[1]);
        assert_eq!(verify(&none, &keys, ISS, 50), Err(JwtError::Algorithm));
        for garbage in ["", "a.b", "a.b.c.d", "!!.??.**", "e30.e30.e30"] {
            assert!(verify(garbage, &keys, ISS, 50).is_err(), "{garbage}");
        }
    }
}
