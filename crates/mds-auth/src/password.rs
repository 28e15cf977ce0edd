//! Passwords: argon2id (m = 19 MiB, t = 2, p = 1, the OWASP minimum), hashed
//! on blocking threads behind a semaphore sized to the cores, so a burst
//! of logins queues instead of starving the async runtime or the memory.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

pub const MEMORY_KIB: u32 = 19 * 1024;
pub const ITERATIONS: u32 = 2;
pub const LANES: u32 = 1;

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// Verified against when the email is unknown, so that costs the same
    /// time as a wrong password.
    decoy: Arc<String>,
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, LANES, None).expect("constant parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// One argon2id hash, on the calling thread. For benchmarks and tests.
pub fn hash_blocking(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 accepts any password and a generated salt")
        .to_string()
}

fn verify_blocking(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

impl Hasher {
    /// At most `parallel` hashes at once (0: one per core).
    pub fn new(parallel: usize) -> Self {
        let parallel = if parallel == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            parallel
        };
        Self {
            permits: Arc::new(Semaphore::new(parallel)),
            decoy: Arc::new(hash_blocking("decoy password, never anyone's")),
        }
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let _permit = self.permits.acquire().await.expect("never closed");
        tokio::task::spawn_blocking(work)
            .await
            .expect("argon2 does not panic")
    }

    pub async fn hash(&self, password: String) -> String {
        self.run(move || hash_blocking(&password)).await
    }

    /// Whether `password` matches `hash`; with no hash (unknown user) the
    /// decoy is checked, so the answer takes as long and is false.
    pub async fn verify(&self, password: String, hash: Option<String>) -> bool {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.decoy.as_str().to_string());
        let matched = self.run(move || verify_blocking(&password, &hash)).await;
        known && matched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_match() {
        let hasher = Hasher::new(1);
        let hash = hasher.hash("correct horse".into()).await;
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            hasher
                .verify("correct horse".into(), Some(hash.clone()))
                .await
        );
        assert!(!hasher.verify("wrong".into(), Some(hash)).await);
        assert!(
            !hasher
                .verify("decoy password, never anyone's".into(), None)
                .await
        );
        assert!(!hasher.verify("x".into(), Some("not a hash".into())).await);
    }
}
