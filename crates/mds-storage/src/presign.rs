//! Presigned URLs for the MIOSA storage API: one method, one object, until
//! an expiry, MACed with a key derived from the master key. Any change to
//! the method, bucket, key or expiry breaks the signature.

use subtle_eq::constant_time_eq;

/// The query parameters a presigned URL carries.
pub const EXPIRES: &str = "X-Mds-Expires";
pub const SIGNATURE: &str = "X-Mds-Signature";

pub struct Presigner {
    key: [u8; 32],
}

impl std::fmt::Debug for Presigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Presigner(..)")
    }
}

mod subtle_eq {
    /// Compares without an early exit, so timing tells nothing.
    pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Presigner {
    pub fn new(master: &mds_crypto::MasterKey) -> Self {
        Self {
            key: *master.derive("storage presign v1"),
        }
    }

    fn mac(&self, method: &str, bucket_id: &str, key: &str, expires: i64) -> String {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        for part in [method.as_bytes(), bucket_id.as_bytes(), key.as_bytes()] {
            hasher.update(&(part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        hasher.update(&expires.to_be_bytes());
        hasher.finalize().to_hex().to_string()
    }

    /// The signature for `method` on `bucket_id/key` until `expires` (Unix
    /// seconds).
    pub fn sign(&self, method: &str, bucket_id: &str, key: &str, expires: i64) -> String {
        self.mac(method, bucket_id, key, expires)
    }

    /// Whether `signature` is valid now (`now`, Unix seconds).
    pub fn check(
        &self,
        method: &str,
        bucket_id: &str,
        key: &str,
        expires: i64,
        signature: &str,
        now: i64,
    ) -> Result<(), &'static str> {
        let expected = self.mac(method, bucket_id, key, expires);
        if !constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
            return Err("the presigned URL's signature does not match this request");
        }
        if now > expires {
            return Err("the presigned URL has expired");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_opens_only_its_method_key_and_time() {
        let master = mds_crypto::MasterKey::from_hex(&"11".repeat(32)).unwrap();
        let p = Presigner::new(&master);
        let sig = p.sign("GET", "bkt_1", "a/b.txt", 1000);
        let check = |m: &str, b: &str, k: &str, e: i64, s: &str, now: i64| {
            p.check(m, b, k, e, s, now).is_ok()
        };
        assert!(check("GET", "bkt_1", "a/b.txt", 1000, &sig, 999));
        assert!(check("GET", "bkt_1", "a/b.txt", 1000, &sig, 1000));
        assert!(
            !check("GET", "bkt_1", "a/b.txt", 1000, &sig, 1001),
            "expired"
        );
        assert!(!check("PUT", "bkt_1", "a/b.txt", 1000, &sig, 0), "method");
        assert!(!check("GET", "bkt_2", "a/b.txt", 1000, &sig, 0), "bucket");
        assert!(!check("GET", "bkt_1", "a/b.txT", 1000, &sig, 0), "key");
        assert!(!check("GET", "bkt_1", "a/b.txt", 2000, &sig, 0), "expiry");
        assert!(
            !check("GET", "bkt_1", "a/b.txt", 1000, &sig[1..], 0),
            "signature"
        );
        let other = Presigner::new(&mds_crypto::MasterKey::from_hex(&"22".repeat(32)).unwrap());
        assert!(other
            .check("GET", "bkt_1", "a/b.txt", 1000, &sig, 0)
            .is_err());
    }
}
