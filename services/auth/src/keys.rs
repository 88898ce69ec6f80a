//! Ed25519 signing keys: generated on first start, kept in the database so every replica signs with
//! the same active key, published as a JWK set with every key still able to verify a live token.

use crate::key_cipher::{self, KeyCipher};
use crate::store::{KeyRow, Store};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_authn::{Claims, JwksProvider};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::sync::{Arc, RwLock};

struct Loaded {
    kid: String,
    encoding: EncodingKey,
    jwks: JwkSet,
}

/// The signing key in use plus the published set. Reloaded from the database periodically so a
/// rotation done on one replica reaches the others.
#[derive(Clone)]
pub struct Keys {
    inner: Arc<RwLock<Loaded>>,
    cipher: Option<KeyCipher>,
}

impl Keys {
    /// Loads the keys, generating the first one if the database has none. With a cipher, keys still
    /// stored in plain form (from before encryption was configured) are encrypted in place.
    pub async fn load(store: &Store, access_ttl: i64, cipher: Option<KeyCipher>) -> Result<Keys, crate::Error> {
        if store.active_key().await?.is_none() {
            store.insert_key(&generate(cipher.as_ref())?).await?;
        }
        if let Some(c) = &cipher {
            for k in store.all_keys().await? {
                if !key_cipher::is_sealed(&k.private_der) {
                    let plain = key_cipher::open(None, &k.kid, &k.private_der)?;
                    store.replace_private_key(&k.kid, &k.private_der, &c.seal(&k.kid, &plain)?).await?;
                    tracing::info!(kid = %k.kid, "signing key encrypted at rest");
                }
            }
        }
        let loaded = Self::build(store, access_ttl, cipher.as_ref()).await?;
        Ok(Keys { inner: Arc::new(RwLock::new(loaded)), cipher })
    }

    /// Makes a new key the signing key; the old one stays published until its tokens expired, or,
    /// with `withdraw`, leaves the published set at once (a leaked key).
    pub async fn rotate(store: &Store, cipher: Option<&KeyCipher>, withdraw: bool) -> Result<String, crate::Error> {
        let k = generate(cipher)?;
        store.insert_key(&k).await?;
        // Retired "at the epoch": older than any horizon, so never published again.
        let at = if withdraw { 0 } else { chat_protocol::Timestamp::now().0 };
        store.retire_keys_except(&k.kid, at).await?;
        Ok(k.kid)
    }

    pub async fn reload(&self, store: &Store, access_ttl: i64) -> Result<(), crate::Error> {
        let loaded = Self::build(store, access_ttl, self.cipher.as_ref()).await?;
        *self.inner.write().expect("keys lock") = loaded;
        Ok(())
    }

    async fn build(store: &Store, access_ttl: i64, cipher: Option<&KeyCipher>) -> Result<Loaded, crate::Error> {
        let active = store.active_key().await?.ok_or_else(|| crate::Error::Internal("no signing key".into()))?;
        let der = key_cipher::open(cipher, &active.kid, &active.private_der)?;
        let encoding = EncodingKey::from_ed_der(&der);
        let published = store.published_keys(chat_protocol::Timestamp::now().0 - access_ttl * 1000).await?;
        let keys: Vec<serde_json::Value> = published
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP", "crv": "Ed25519", "x": k.public_x, "kid": k.kid, "alg": "EdDSA", "use": "sig"
                })
            })
            .collect();
        let jwks: JwkSet = serde_json::from_value(serde_json::json!({ "keys": keys }))
            .map_err(|e| crate::Error::Internal(e.to_string()))?;
        Ok(Loaded { kid: active.kid, encoding, jwks })
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, crate::Error> {
        let k = self.inner.read().expect("keys lock");
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(k.kid.clone());
        jsonwebtoken::encode(&header, claims, &k.encoding).map_err(|e| crate::Error::Internal(e.to_string()))
    }

    pub fn jwks(&self) -> JwkSet {
        self.inner.read().expect("keys lock").jwks.clone()
    }
}

impl JwksProvider for Keys {
    fn jwks(&self) -> JwkSet {
        Keys::jwks(self)
    }
}

fn generate(cipher: Option<&KeyCipher>) -> Result<KeyRow, crate::Error> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| crate::Error::Internal(e.to_string()))?;
    let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|e| crate::Error::Internal(e.to_string()))?;
    let public = pair.public_key().as_ref();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public);
    let kid = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect::<String>();
    Ok(KeyRow {
        private_der: key_cipher::store_form(cipher, &kid, doc.as_ref())?,
        kid,
        public_x: URL_SAFE_NO_PAD.encode(public),
        created_at: chat_protocol::Timestamp::now().0,
    })
}
