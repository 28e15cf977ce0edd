//! Secrets at rest and on the wire.
//!
//! - [`MasterKey`]: 32 random bytes in `DIR/master.key` (0600) or
//!   `MDS_MASTER_KEY`; everything secret in the metadata database is sealed
//!   under it with XChaCha20-Poly1305.
//! - Sealing binds each ciphertext to the row it belongs to (associated
//!   data), so a sealed value copied into another row fails to open.
//! - API keys are 190 bits of randomness; a fast hash (SHA-256) is enough to
//!   store them, as it is for GitHub's and Stripe's tokens.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub mod scram;
pub mod stream;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the master key must be 64 hexadecimal characters (32 bytes)")]
    BadMasterKey,
    #[error("sealed value is malformed or was sealed under another key")]
    Unseal,
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

const SEAL_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;

/// The key every secret at rest is sealed under.
pub struct MasterKey {
    cipher: XChaCha20Poly1305,
    /// Root of the keys derived for MACs (presigned URLs, S3 secrets), kept
    /// apart from the sealing key itself.
    derive_root: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Parses 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(hex_key: &str) -> Result<Self, CryptoError> {
        let bytes =
            Zeroizing::new(hex::decode(hex_key.trim()).map_err(|_| CryptoError::BadMasterKey)?);
        if bytes.len() != 32 {
            return Err(CryptoError::BadMasterKey);
        }
        Ok(Self {
            cipher: XChaCha20Poly1305::new_from_slice(&bytes)
                .map_err(|_| CryptoError::BadMasterKey)?,
            derive_root: Zeroizing::new(blake3::derive_key("mds master key derivation v1", &bytes)),
        })
    }

    /// The key from `override_hex` if given, else from `path`, created (0600)
    /// on first use. Returns whether a new key file was written.
    pub fn load_or_create(
        path: &Path,
        override_hex: Option<&str>,
    ) -> Result<(Self, bool), CryptoError> {
        if let Some(hex_key) = override_hex {
            return Ok((Self::from_hex(hex_key)?, false));
        }
        let io = |source| CryptoError::Io {
            path: path.display().to_string(),
            source,
        };
        match fs::read_to_string(path) {
            Ok(text) => {
                let mode = fs::metadata(path).map_err(io)?.permissions().mode();
                if mode & 0o077 != 0 {
                    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io)?;
                }
                Ok((Self::from_hex(&text)?, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = Zeroizing::new([0u8; 32]);
                OsRng.fill_bytes(bytes.as_mut());
                let hex_key = Zeroizing::new(hex::encode(bytes.as_ref()));
                write_secret_file(path, hex_key.as_bytes()).map_err(io)?;
                Ok((Self::from_hex(&hex_key)?, true))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A 256-bit key for one purpose (`context`), stable for this master
    /// key; different contexts give unrelated keys.
    pub fn derive(&self, context: &str) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(*blake3::keyed_hash(&self.derive_root, context.as_bytes()).as_bytes())
    }

    /// Seals `plaintext`, bound to `context` (for example `"var:env_01..:NAME"`).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Opens what [`seal`](Self::seal) made under the same `context`.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != SEAL_VERSION {
            return Err(CryptoError::Unseal);
        }
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Unseal)
    }

    /// Opens a sealed UTF-8 string.
    pub fn open_string(
        &self,
        context: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<String>, CryptoError> {
        let bytes = self.open(context, sealed)?;
        String::from_utf8(bytes.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Unseal)
    }
}

/// Writes a file only its owner can read, replacing any previous one
/// atomically (temp file, fsync, rename).
pub fn write_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A random password of `len` alphanumeric characters (5.95 bits each).
pub fn random_password(len: usize) -> Zeroizing<String> {
    Zeroizing::new(Alphanumeric.sample_string(&mut OsRng, len))
}

/// A freshly minted API key: the plaintext is shown once, the hash is kept.
pub struct NewApiKey {
    pub token: Zeroizing<String>,
    pub hash: [u8; 32],
    /// The first characters, stored in clear so lists can tell keys apart.
    pub prefix: String,
}

pub const API_KEY_PREFIX: &str = "msk_";
const API_KEY_RANDOM_CHARS: usize = 40;

pub fn new_api_key() -> NewApiKey {
    let token = Zeroizing::new(format!(
        "{API_KEY_PREFIX}{}",
        Alphanumeric.sample_string(&mut OsRng, API_KEY_RANDOM_CHARS)
    ));
    NewApiKey {
        hash: hash_api_key(&token),
        prefix: token[..API_KEY_PREFIX.len() + 6].to_string(),
        token,
    }
}

/// The stored form of an API key.
pub fn hash_api_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// SHA-256 of several parts, each length-prefixed so parts cannot run into
/// each other.
pub fn digest_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_hex(&"ab".repeat(32)).unwrap()
    }

    #[test]
    fn seal_round_trips_and_is_randomised() {
        let k = key();
        let a = k.seal("ctx", b"hello");
        let b = k.seal("ctx", b"hello");
        assert_ne!(a, b);
        assert_eq!(&k.open("ctx", &a).unwrap()[..], b"hello");
    }

    #[test]
    fn sealed_values_are_bound_to_context_and_key() {
        let k = key();
        let sealed = k.seal("var:env_a:X", b"secret");
        assert!(k.open("var:env_b:X", &sealed).is_err());
        let other = MasterKey::from_hex(&"cd".repeat(32)).unwrap();
        assert!(other.open("var:env_a:X", &sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(k.open("var:env_a:X", &tampered).is_err());
        assert!(k.open("var:env_a:X", &[1, 2, 3]).is_err());
    }

    #[test]
    fn master_key_file_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let (k1, created) = MasterKey::load_or_create(&path, None).unwrap();
        assert!(created);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (k2, created) = MasterKey::load_or_create(&path, None).unwrap();
        assert!(!created);
        let sealed = k1.seal("c", b"x");
        assert_eq!(&k2.open("c", &sealed).unwrap()[..], b"x");
    }

    #[test]
    fn bad_master_keys_are_refused() {
        for bad in ["", "zz", &"ab".repeat(31), &"ab".repeat(33)] {
            assert!(MasterKey::from_hex(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn api_keys_hash_stably_and_differ() {
        let a = new_api_key();
        let b = new_api_key();
        assert!(a.token.starts_with("msk_"));
        assert_eq!(a.token.len(), 44);
        assert_ne!(*a.token, *b.token);
        assert_eq!(hash_api_key(&a.token), a.hash);
        assert!(a.token.starts_with(&a.prefix));
    }

    #[test]
    fn digest_parts_separates_parts() {
        assert_ne!(digest_parts(&[b"ab", b"c"]), digest_parts(&[b"a", b"bc"]));
    }
}
