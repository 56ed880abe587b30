//! Encryption of channel credentials at rest and hashing of API keys.
//!
//! Credentials are sealed with AES-256-GCM under the master key, with a fresh 96-bit
//! nonce per seal and the owning tenant and channel as associated data, so a
//! ciphertext copied into another row does not decrypt.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

const NONCE_LEN: usize = 12;

/// Seals and opens credentials. Holds the key; `Debug` does not show it.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
    /// Earlier master keys: they still open, never seal (key rotation).
    previous: Vec<Aes256Gcm>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("ciphertext could not be opened (wrong key or wrong row)")]
    Open,
    #[error("encryption failed")]
    Seal,
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(key.into()),
            previous: Vec::new(),
        }
    }

    /// Also opens what was sealed under any of `keys` (during a key rotation).
    pub fn with_previous(mut self, keys: &[[u8; 32]]) -> Self {
        self.previous = keys.iter().map(|k| Aes256Gcm::new(k.into())).collect();
        self
    }

    /// Whether `sealed` opens under the current key (not only a previous one).
    pub fn is_current(&self, context: &str, sealed: &[u8]) -> bool {
        Self::open_with(&self.cipher, context, sealed).is_ok()
    }

    /// Encrypts `plaintext` bound to `context` (tenant, kind and row id).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Seal)?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts what [`Sealer::seal`] produced for the same `context`.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        std::iter::once(&self.cipher)
            .chain(&self.previous)
            .find_map(|cipher| Self::open_with(cipher, context, sealed).ok())
            .ok_or(CryptoError::Open)
    }

    fn open_with(cipher: &Aes256Gcm, context: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Open)
    }
}

/// The associated data binding channel credentials to their row.
pub fn channel_context(tenant_id: &str, channel_id: &str) -> String {
    format!("omnigate/channel-credentials/v1/{tenant_id}/{channel_id}")
}

/// A new random master key, base64 encoded.
pub fn generate_master_key() -> String {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// Reads the key file beside a SQLite database, creating it (mode 0600) if missing.
/// Returns the key and whether it was just created.
pub fn load_or_create_key_file(path: &Path) -> std::io::Result<(SecretString, bool)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(key) => return Ok((SecretString::from(key.trim().to_string()), false)),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let key = generate_master_key();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(key.as_bytes())?;
    file.sync_all()?;
    Ok((SecretString::from(key), true))
}

/// An API key: shown once, stored only as its hash.
pub struct NewApiKey {
    pub key: SecretString,
    pub hash: Vec<u8>,
    pub prefix: String,
}

/// Makes a fresh API key (`og_` + 43 base64url characters, 256 bits of randomness).
pub fn new_api_key() -> NewApiKey {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let key = format!(
        "og_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    NewApiKey {
        hash: hash_api_key(&key),
        prefix: key[..8].to_string(),
        key: SecretString::from(key),
    }
}

/// The stored form of an API key. Keys are high-entropy random strings, so a plain
/// SHA-256 is enough to make the stored value useless to someone reading the table.
pub fn hash_api_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Constant-time comparison of a presented token with the configured one.
pub fn token_matches(presented: &str, expected: &SecretString) -> bool {
    use subtle::ConstantTimeEq;
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.expose_secret().as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_credentials_open_only_in_their_row() {
        let sealer = Sealer::new(&[7u8; 32]);
        let ctx = channel_context("tenant-a", "chan-1");
        let sealed = sealer.seal(&ctx, b"EAAG-token").expect("seal");
        assert!(!sealed.windows(4).any(|w| w == b"EAAG"));
        assert_eq!(sealer.open(&ctx, &sealed).expect("open"), b"EAAG-token");
        assert!(sealer
            .open(&channel_context("tenant-b", "chan-1"), &sealed)
            .is_err());
        assert!(Sealer::new(&[8u8; 32]).open(&ctx, &sealed).is_err());
        assert!(sealer.open(&ctx, &sealed[..5]).is_err());
    }

    #[test]
    fn api_keys_are_random_and_hashed() {
        let a = new_api_key();
        let b = new_api_key();
        assert_ne!(a.key.expose_secret(), b.key.expose_secret());
        assert_eq!(a.hash, hash_api_key(a.key.expose_secret()));
        assert!(a.key.expose_secret().starts_with("og_"));
        assert!(token_matches(a.key.expose_secret(), &a.key));
        assert!(!token_matches(b.key.expose_secret(), &a.key));
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.key");
        let (first, created) = load_or_create_key_file(&path).expect("create");
        assert!(created);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (second, created) = load_or_create_key_file(&path).expect("reuse");
        assert!(!created);
        assert_eq!(first.expose_secret(), second.expose_secret());
        assert!(crate::config::decode_master_key(&first).is_some());
    }
}
