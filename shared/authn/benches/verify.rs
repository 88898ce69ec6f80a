//! Access-token verification: done on every REST request and WebSocket upgrade.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_authn::{Claims, JwksProvider, KeySource, Verifier};
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::jwk::JwkSet;
use std::sync::Arc;

struct Keys(JwkSet);

impl JwksProvider for Keys {
    fn jwks(&self) -> JwkSet {
        self.0.clone()
    }
}

fn verify(c: &mut Criterion) {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "alg": "EdDSA", "use": "sig"}
    ]}))
    .unwrap();
    let now = chat_authn::now_secs();
    let claims =
        Claims { sub: uuid::Uuid::now_v7(), sid: uuid::Uuid::now_v7(), iat: now, exp: now + 900, jti: "j".into() };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("k1".into());
    let token = jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ed_der(doc.as_ref())).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let verifier = Verifier::new(KeySource::Local(Arc::new(Keys(set))));
    rt.block_on(verifier.verify(&token)).unwrap();
    c.bench_function("jwt_verify_eddsa", |b| b.iter(|| rt.block_on(verifier.verify(&token)).unwrap()));
}

criterion_group!(benches, verify);
criterion_main!(benches);
