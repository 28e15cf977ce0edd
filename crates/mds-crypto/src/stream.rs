//! Files of any size, encrypted and authenticated as they stream (the
//! backup repository's format).
//!
//! A file is a header (magic and a random 19-byte nonce prefix) and frames
//! of [`FRAME`] plaintext bytes, each sealed with XChaCha20-Poly1305 under
//! the nonce `prefix || counter || last`, with the file's repository path
//! as associated data. So a frame cannot be altered, reordered, moved to
//! another file, or dropped from the end without the open failing: the
//! last frame says it is last, and a file without one is truncated.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::CryptoError;

/// Plaintext bytes per frame.
pub const FRAME: usize = 1 << 20;
const TAG: usize = 16;
/// Ciphertext bytes of a full frame.
pub const SEALED_FRAME: usize = FRAME + TAG;
const MAGIC: &[u8; 8] = b"MDSBAK01";
const PREFIX: usize = 19;
/// The header's length: magic and nonce prefix.
pub const HEADER: usize = MAGIC.len() + PREFIX;

fn nonce(prefix: &[u8; PREFIX], counter: u32, last: bool) -> XNonce {
    let mut n = [0u8; 24];
    n[..PREFIX].copy_from_slice(prefix);
    n[PREFIX..PREFIX + 4].copy_from_slice(&counter.to_be_bytes());
    n[23] = u8::from(last);
    XNonce::from(n)
}

/// Seals one file: feed it plaintext, write out what it returns.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    prefix: [u8; PREFIX],
    aad: Vec<u8>,
    counter: u32,
    pending: Vec<u8>,
}

impl Sealer {
    /// A sealer for the file at `path` (its associated data), and the
    /// header to write first.
    pub fn new(key: &[u8; 32], path: &str) -> (Self, Vec<u8>) {
        let mut prefix = [0u8; PREFIX];
        rand::thread_rng().fill_bytes(&mut prefix);
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&prefix);
        let sealer = Self {
            cipher: XChaCha20Poly1305::new(key.into()),
            prefix,
            aad: path.as_bytes().to_vec(),
            counter: 0,
            pending: Vec::with_capacity(FRAME),
        };
        (sealer, header)
    }

    fn seal(&mut self, plain: &[u8], last: bool) -> Result<Vec<u8>, CryptoError> {
        let n = nonce(&self.prefix, self.counter, last);
        self.counter = self.counter.checked_add(1).ok_or(CryptoError::Unseal)?;
        self.cipher
            .encrypt(
                &n,
                Payload {
                    msg: plain,
                    aad: &self.aad,
                },
            )
            .map_err(|_| CryptoError::Unseal)
    }

    /// Takes plaintext; returns the frames it completed (possibly none).
    pub fn push(&mut self, mut data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::new();
        while !data.is_empty() {
            // A full frame is sealed only once more data follows: the
            // last frame must carry the last flag.
            if self.pending.len() == FRAME {
                let frame = std::mem::take(&mut self.pending);
                out.extend(self.seal(&frame, false)?);
                self.pending.reserve(FRAME);
            }
            let take = (FRAME - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(out)
    }

    /// The last frame (the pending bytes, possibly none).
    pub fn finish(mut self) -> Result<Vec<u8>, CryptoError> {
        let frame = std::mem::take(&mut self.pending);
        self.seal(&frame, true)
    }
}

/// Opens one file as its bytes arrive.
pub struct Opener {
    cipher: XChaCha20Poly1305,
    aad: Vec<u8>,
    prefix: Option<[u8; PREFIX]>,
    counter: u32,
    buffer: Vec<u8>,
    done: bool,
}

impl Opener {
    pub fn new(key: &[u8; 32], path: &str) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(key.into()),
            aad: path.as_bytes().to_vec(),
            prefix: None,
            counter: 0,
            buffer: Vec::new(),
            done: false,
        }
    }

    fn open(&mut self, frame: &[u8], last: bool) -> Result<Vec<u8>, CryptoError> {
        let prefix = self.prefix.ok_or(CryptoError::Unseal)?;
        let n = nonce(&prefix, self.counter, last);
        self.counter = self.counter.checked_add(1).ok_or(CryptoError::Unseal)?;
        self.cipher
            .decrypt(
                &n,
                Payload {
                    msg: frame,
                    aad: &self.aad,
                },
            )
            .map_err(|_| CryptoError::Unseal)
    }

    /// Takes ciphertext; returns the plaintext of the frames it completed.
    /// A frame is opened only once more bytes follow it (so the last one
    /// is known); [`Opener::finish`] opens that one.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if self.done {
            return Err(CryptoError::Unseal);
        }
        self.buffer.extend_from_slice(data);
        if self.prefix.is_none() {
            if self.buffer.len() < HEADER {
                return Ok(Vec::new());
            }
            if &self.buffer[..MAGIC.len()] != MAGIC {
                return Err(CryptoError::Unseal);
            }
            let mut prefix = [0u8; PREFIX];
            prefix.copy_from_slice(&self.buffer[MAGIC.len()..HEADER]);
            self.prefix = Some(prefix);
            self.buffer.drain(..HEADER);
        }
        let mut out = Vec::new();
        let mut start = 0;
        while self.buffer.len() - start > SEALED_FRAME {
            let frame = self.buffer[start..start + SEALED_FRAME].to_vec();
            out.extend(self.open(&frame, false)?);
            start += SEALED_FRAME;
        }
        self.buffer.drain(..start);
        Ok(out)
    }

    /// The plaintext of the last frame; an error if the file was cut short
    /// or altered.
    pub fn finish(&mut self) -> Result<Vec<u8>, CryptoError> {
        if self.done || self.prefix.is_none() || self.buffer.len() < TAG {
            return Err(CryptoError::Unseal);
        }
        let frame = std::mem::take(&mut self.buffer);
        self.done = true;
        self.open(&frame, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal_all(key: &[u8; 32], path: &str, data: &[u8], piece: usize) -> Vec<u8> {
        let (mut sealer, mut out) = Sealer::new(key, path);
        for part in data.chunks(piece.max(1)) {
            out.extend(sealer.push(part).unwrap());
        }
        out.extend(sealer.finish().unwrap());
        out
    }

    fn open_all(
        key: &[u8; 32],
        path: &str,
        sealed: &[u8],
        piece: usize,
    ) -> Result<Vec<u8>, CryptoError> {
        let mut opener = Opener::new(key, path);
        let mut out = Vec::new();
        for part in sealed.chunks(piece.max(1)) {
            out.extend(opener.push(part)?);
        }
        out.extend(opener.finish()?);
        Ok(out)
    }

    #[test]
    fn round_trips_at_every_size_around_a_frame() {
        let key = [7u8; 32];
        for len in [0, 1, FRAME - 1, FRAME, FRAME + 1, 2 * FRAME, 2 * FRAME + 5] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for piece in [1000, 65536, FRAME + 3] {
                let sealed = seal_all(&key, "a/b", &data, piece);
                assert_eq!(
                    open_all(&key, "a/b", &sealed, 4096).unwrap(),
                    data,
                    "len {len}"
                );
            }
        }
    }

    #[test]
    fn any_change_truncation_or_move_is_refused() {
        let key = [9u8; 32];
        let data = vec![42u8; FRAME * 2 + 10];
        let sealed = seal_all(&key, "rp/1", &data, 1 << 16);
        // A bit flipped anywhere.
        for at in [3, HEADER + 1, HEADER + SEALED_FRAME + 7, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 1;
            assert!(
                open_all(&key, "rp/1", &bad, 1 << 16).is_err(),
                "flip at {at}"
            );
        }
        // Cut after a whole frame: the frame that follows said it was not last.
        let cut = &sealed[..HEADER + SEALED_FRAME];
        assert!(open_all(&key, "rp/1", cut, 1 << 16).is_err());
        // Another path, another key.
        assert!(open_all(&key, "rp/2", &sealed, 1 << 16).is_err());
        assert!(open_all(&[1u8; 32], "rp/1", &sealed, 1 << 16).is_err());
    }
}
