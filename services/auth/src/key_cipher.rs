//! Encryption at rest of the signing keys' private halves (AES-256-GCM, key from a Secret).
//!
//! The auth database may be read by more than the auth service (backups, a shared role): the private
//! key is stored as `aesgcm:<base64 nonce ‖ ciphertext ‖ tag>`, bound to its `kid`, and decrypted
//! only in memory. The key comes from `AUTH_KEY_ENCRYPTION_KEY` (64 hex characters) or the file
//! `AUTH_KEY_ENCRYPTION_KEY_FILE` names.

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chat_common::config::ConfigError;
use std::sync::Arc;

pub const VAR: &str = "AUTH_KEY_ENCRYPTION_KEY";
pub const FILE_VAR: &str = "AUTH_KEY_ENCRYPTION_KEY_FILE";
const PREFIX: &str = "aesgcm:";

/// The encryption key; `Debug` never shows it.
#[derive(Clone)]
pub struct KeyCipher(Arc<RandomizedNonceKey>);

impl std::fmt::Debug for KeyCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyCipher(<redacted>)")
    }
}

fn bad(name: &'static str, reason: &str) -> ConfigError {
    ConfigError { name, value: "<redacted>".into(), reason: reason.into() }
}

impl KeyCipher {
    pub fn from_hex(name: &'static str, hex: &str) -> Result<KeyCipher, ConfigError> {
        let bytes = chat_common::config::key32(name, hex)?;
        let key = RandomizedNonceKey::new(&AES_256_GCM, &bytes).map_err(|_| bad(name, "unusable key"))?;
        Ok(KeyCipher(Arc::new(key)))
    }

    /// From the environment; `None` when neither variable is set.
    pub fn from_env() -> Result<Option<KeyCipher>, ConfigError> {
        chat_common::config::secret(VAR, FILE_VAR)?.map(|(name, v)| KeyCipher::from_hex(name, &v)).transpose()
    }

    pub fn seal(&self, kid: &str, plain: &[u8]) -> Result<String, crate::Error> {
        let mut buf = plain.to_vec();
        let nonce = self
            .0
            .seal_in_place_append_tag(Aad::from(kid.as_bytes()), &mut buf)
            .map_err(|_| crate::Error::Internal("key encryption failed".into()))?;
        let mut out = nonce.as_ref().to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
    }

    fn open(&self, kid: &str, stored: &str) -> Result<Vec<u8>, crate::Error> {
        let wrong = || crate::Error::Internal(format!("signing key {kid} does not decrypt with {VAR} (wrong key?)"));
        let raw = STANDARD.decode(stored).map_err(|_| wrong())?;
        if raw.len() < 12 + 16 {
            return Err(wrong());
        }
        let (nonce, rest) = raw.split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong())?;
        let mut rest = rest.to_vec();
        let plain = self.0.open_in_place(nonce, Aad::from(kid.as_bytes()), &mut rest).map_err(|_| wrong())?;
        Ok(plain.to_vec())
    }
}

/// True when a stored private key is encrypted.
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// The PKCS#8 bytes of a stored private key, decrypting when it is sealed.
pub fn open(cipher: Option<&KeyCipher>, kid: &str, stored: &str) -> Result<Vec<u8>, crate::Error> {
    match (stored.strip_prefix(PREFIX), cipher) {
        (Some(sealed), Some(c)) => c.open(kid, sealed),
        (Some(_), None) => Err(crate::Error::Internal(format!(
            "the signing keys are encrypted: set {VAR} (or {FILE_VAR}) to the key they were encrypted with"
        ))),
        (None, _) => STANDARD.decode(stored).map_err(|e| crate::Error::Internal(e.to_string())),
    }
}

/// How a private key is stored: sealed when a cipher is configured, plain base64 otherwise.
pub fn store_form(cipher: Option<&KeyCipher>, kid: &str, pkcs8: &[u8]) -> Result<String, crate::Error> {
    match cipher {
        Some(c) => c.seal(kid, pkcs8),
        None => Ok(STANDARD.encode(pkcs8)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_bound_to_the_kid() {
        let c = KeyCipher::from_hex(VAR, &"ab".repeat(32)).unwrap();
        let stored = store_form(Some(&c), "kid1", b"secret key bytes").unwrap();
        assert!(is_sealed(&stored));
        assert!(!stored.contains("secret"));
        assert_eq!(open(Some(&c), "kid1", &stored).unwrap(), b"secret key bytes");
        assert!(open(Some(&c), "kid2", &stored).is_err(), "bound to its kid");
        assert!(open(None, "kid1", &stored).is_err(), "needs the key");
        let other = KeyCipher::from_hex(VAR, &"cd".repeat(32)).unwrap();
        assert!(open(Some(&other), "kid1", &stored).is_err());
        assert!(KeyCipher::from_hex(VAR, "short").is_err());
        assert!(!format!("{c:?}").contains("ab"));
    }
}
