//! Passwords: argon2id (m = 19 MiB, t = 2, p = 1, the OWASP minimum).
//!
//! Hashes run on a fixed pool of threads, one per core, each owning its
//! 19 MiB of argon2 memory for good: a burst of logins queues instead of
//! starving the async runtime or the machine's memory, and no hash pays
//! for allocating and zeroing its memory (9% of a login's CPU otherwise).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

pub const MEMORY_KIB: u32 = 19 * 1024;
pub const ITERATIONS: u32 = 2;
pub const LANES: u32 = 1;
const OUTPUT_LEN: usize = 32;

fn params() -> Params {
    Params::new(MEMORY_KIB, ITERATIONS, LANES, Some(OUTPUT_LEN)).expect("constant parameters")
}

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
}

/// Argon2's working memory, allocated once per thread.
pub struct Memory(Vec<Block>);

impl Memory {
    pub fn new() -> Self {
        Self(vec![Block::default(); params().block_count()])
    }
}

impl Default for Memory {
    fn default() -> Self {
        Self::new()
    }
}

/// One argon2id hash (a PHC string) on the calling thread, in `memory`.
pub fn hash_with(memory: &mut Memory, password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .decode_b64(&mut salt_bytes)
        .expect("a generated salt decodes");
    let mut out = [0u8; OUTPUT_LEN];
    argon2()
        .hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, &mut memory.0)
        .expect("argon2 accepts any password up to 4 GiB and a generated salt");
    PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params()).expect("constant parameters"),
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).expect("32 bytes is a valid output")),
    }
    .to_string()
}

/// One hash with fresh memory. For benchmarks and tests.
pub fn hash_blocking(password: &str) -> String {
    hash_with(&mut Memory::new(), password)
}

/// Whether `password` matches the PHC string `hash`. Hashes with our
/// parameters are recomputed in `memory`; others (older parameters) the
/// slow way.
pub fn verify_with(memory: &mut Memory, password: &str, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let ours = parsed.algorithm == argon2::ARGON2ID_IDENT
        && parsed.version == Some(Version::V0x13.into())
        && Params::try_from(&parsed).is_ok_and(|p| p == params());
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    if !ours || expected.len() != OUTPUT_LEN {
        return argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = [0u8; OUTPUT_LEN];
    if argon2()
        .hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, &mut memory.0)
        .is_err()
    {
        return false;
    }
    // Output's equality is constant-time.
    Output::new(&out).is_ok_and(|computed| computed == expected)
}

type Job = Box<dyn FnOnce(&mut Memory) + Send>;

/// Hashes waiting per hashing thread before new ones are refused: about a
/// second of work each, so nobody can queue minutes of it for everyone.
const QUEUE_PER_THREAD: usize = 64;

/// Every hashing thread is busy and the queue is full: retry shortly.
#[derive(Debug, thiserror::Error)]
#[error("password hashing is saturated; retry shortly")]
pub struct Busy;

#[derive(Clone)]
pub struct Hasher {
    jobs: SyncSender<Job>,
    /// Verified against when the email is unknown, so that costs the same
    /// time as a wrong password.
    decoy: Arc<String>,
}

impl Hasher {
    /// `threads` hashing threads (0: one per core).
    pub fn new(threads: usize) -> Self {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        let (jobs, queue) = sync_channel::<Job>(threads * QUEUE_PER_THREAD);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || work(&queue))
                .expect("spawning a hashing thread");
        }
        Self {
            jobs,
            decoy: Arc::new(hash_blocking("decoy password, never anyone's")),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Memory) -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            // The client went away while this waited: nobody needs it.
            if !tx.is_closed() {
                let _ = tx.send(work(memory));
            }
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(Busy),
            Err(TrySendError::Disconnected(_)) => {
                panic!("hashing threads live as long as the process")
            }
        }
        Ok(rx.await.expect("a hashing job always answers"))
    }

    pub async fn hash(&self, password: String) -> Result<String, Busy> {
        self.run(move |memory| hash_with(memory, &password)).await
    }

    /// Whether `password` matches `hash`; with no hash (unknown user) the
    /// decoy is checked, so the answer takes as long and is false.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, Busy> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.decoy.as_str().to_string());
        let matched = self
            .run(move |memory| verify_with(memory, &password, &hash))
            .await?;
        Ok(known && matched)
    }
}

fn work(queue: &Mutex<Receiver<Job>>) {
    let mut memory = Memory::new();
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(&mut memory),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_match() {
        let hasher = Hasher::new(1);
        let hash = hasher.hash("correct horse".into()).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        let verify = |p: &str, h: Option<&str>| hasher.verify(p.into(), h.map(str::to_string));
        assert!(verify("correct horse", Some(&hash)).await.unwrap());
        assert!(!verify("wrong", Some(&hash)).await.unwrap());
        assert!(!verify("decoy password, never anyone's", None)
            .await
            .unwrap());
        assert!(!verify("x", Some("not a hash")).await.unwrap());
        // The reference implementation agrees, both ways.
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(argon2().verify_password(b"correct horse", &parsed).is_ok());
        let theirs = argon2::PasswordHasher::hash_password(
            &Argon2::new(
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(8192, 1, 1, None).unwrap(),
            ),
            b"older parameters",
            &SaltString::generate(&mut OsRng),
        )
        .unwrap()
        .to_string();
        assert!(verify("older parameters", Some(&theirs)).await.unwrap());
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_not_grown() {
        let hasher = Hasher::new(1);
        let waiting: Vec<_> = (0..QUEUE_PER_THREAD + 8)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash("x".repeat(12)).await })
            })
            .collect();
        let mut answers = Vec::new();
        for task in waiting {
            answers.push(task.await.unwrap());
        }
        assert!(answers.iter().any(|a| a.is_err()));
        assert!(answers.iter().any(|a| a.is_ok()));
    }
}
