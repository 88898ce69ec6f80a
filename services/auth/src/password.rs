//! Argon2id password hashing (OWASP parameters: m=19 MiB, t=2, p=1), run off the async runtime on a
//! bounded number of blocking threads so a login burst cannot stall other requests or exhaust memory.

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use std::sync::Arc;
use tokio::sync::Semaphore;

const M_COST: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    // Verified against when the user does not exist, so both cases take the same time.
    dummy: Arc<String>,
}

impl Hasher {
    pub fn new(concurrency: usize) -> Self {
        let dummy = hash_blocking("timing-equaliser-not-a-password").expect("argon2 parameters are valid");
        Hasher { permits: Arc::new(Semaphore::new(concurrency.max(1))), dummy: Arc::new(dummy) }
    }

    pub async fn hash(&self, password: String) -> Result<String, crate::Error> {
        let _p = self.permits.acquire().await.map_err(|e| crate::Error::Internal(e.to_string()))?;
        tokio::task::spawn_blocking(move || hash_blocking(&password))
            .await
            .map_err(|e| crate::Error::Internal(e.to_string()))?
    }

    /// `stored` is `None` for an unknown user: a dummy hash is checked so timing does not tell.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, crate::Error> {
        let _p = self.permits.acquire().await.map_err(|e| crate::Error::Internal(e.to_string()))?;
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy.as_str().to_owned());
        let ok = tokio::task::spawn_blocking(move || verify_blocking(&password, &stored))
            .await
            .map_err(|e| crate::Error::Internal(e.to_string()))?;
        Ok(known && ok)
    }
}

fn argon(m: u32, t: u32, p: u32) -> Result<Argon2<'static>, crate::Error> {
    let params = Params::new(m, t, p, Some(32)).map_err(|e| crate::Error::Internal(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// PHC string format: `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`.
fn hash_blocking(password: &str) -> Result<String, crate::Error> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|e| crate::Error::Internal(e.to_string()))?;
    let mut out = [0u8; 32];
    argon(M_COST, T_COST, P_COST)?
        .hash_password_into(password.as_bytes(), &salt, &mut out)
        .map_err(|e| crate::Error::Internal(e.to_string()))?;
    Ok(format!("$argon2id$v=19$m={M_COST},t={T_COST},p={P_COST}${}${}", B64.encode(salt), B64.encode(out)))
}

fn verify_blocking(password: &str, stored: &str) -> bool {
    let parts: Vec<&str> = stored.split('$').collect();
    // ["", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash]
    if parts.len() != 6 || parts[1] != "argon2id" || parts[2] != "v=19" {
        return false;
    }
    let mut m = 0;
    let mut t = 0;
    let mut p = 0;
    for kv in parts[3].split(',') {
        match kv.split_once('=') {
            Some(("m", v)) => m = v.parse().unwrap_or(0),
            Some(("t", v)) => t = v.parse().unwrap_or(0),
            Some(("p", v)) => p = v.parse().unwrap_or(0),
            _ => return false,
        }
    }
    let (Ok(salt), Ok(expected)) = (B64.decode(parts[4]), B64.decode(parts[5])) else {
        return false;
    };
    let Ok(a) = argon(m, t, p) else { return false };
    let mut out = vec![0u8; expected.len()];
    if a.hash_password_into(password.as_bytes(), &salt, &mut out).is_err() {
        return false;
    }
    aws_lc_rs::constant_time::verify_slices_are_equal(&out, &expected).is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hash_and_verify() {
        let h = super::hash_blocking("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(super::verify_blocking("correct horse", &h));
        assert!(!super::verify_blocking("wrong horse", &h));
        assert!(!super::verify_blocking("correct horse", "garbage"));
    }
}
