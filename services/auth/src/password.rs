//! Argon2id password hashing (OWASP parameters: m=19 MiB, t=2, p=1) on a fixed pool of threads,
//! off the async runtime, so a login burst cannot stall other requests. Each thread reuses one
//! 19 MiB block buffer: memory stays at (pool size × 19 MiB) however many logins arrive, instead of
//! growing with allocator arenas on a blocking pool.

use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use chat_common::ApiError;
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::oneshot;

const M_COST: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

enum Job {
    Hash(String, oneshot::Sender<Result<String, crate::Error>>),
    Verify(String, String, oneshot::Sender<bool>),
}

#[derive(Clone)]
pub struct Hasher {
    /// Bounded: a burst beyond what the threads can work off soon is refused (503), not queued.
    jobs: mpsc::SyncSender<Job>,
    // Verified against when the user does not exist, so both cases take the same time.
    dummy: Arc<String>,
    /// How long checking an imported Django (PBKDF2) hash takes, in µs (a moving average; 0 until
    /// one was seen). Every other check is padded to it, so login timing does not tell imported,
    /// not yet upgraded accounts from the rest.
    legacy_micros: Arc<std::sync::atomic::AtomicU64>,
}

impl Hasher {
    pub fn new(threads: usize, queue: usize) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Job>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    let mut blocks: Vec<Block> = Vec::new();
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(Job::Hash(p, reply)) => {
                                let _ = reply.send(hash_with(&p, &mut blocks));
                            }
                            Ok(Job::Verify(p, stored, reply)) => {
                                let _ = reply.send(verify_with(&p, &stored, &mut blocks));
                            }
                            Err(_) => return,
                        }
                    }
                })
                .expect("spawn hashing thread");
        }
        let dummy = hash_with("timing-equaliser-not-a-password", &mut Vec::new()).expect("argon2 parameters are valid");
        Hasher { jobs: tx, dummy: Arc::new(dummy), legacy_micros: Arc::default() }
    }

    fn submit(&self, job: Job) -> Result<(), ApiError> {
        self.jobs.try_send(job).map(|()| metrics::counter!("auth_password_hashes_total").increment(1)).map_err(|e| {
            match e {
                mpsc::TrySendError::Full(_) => {
                    metrics::counter!("auth_hash_queue_full_total").increment(1);
                    ApiError::unavailable("too many logins at once; retry shortly")
                }
                mpsc::TrySendError::Disconnected(_) => ApiError::internal("password hashing stopped"),
            }
        })
    }

    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Hash(password, tx))?;
        Ok(rx.await.map_err(|e| crate::Error::Internal(e.to_string()))??)
    }

    /// `stored` is `None` for an unknown user: a dummy hash is checked so timing does not tell.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, ApiError> {
        use std::sync::atomic::Ordering;
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy.as_str().to_owned());
        let legacy = stored.starts_with("pbkdf2_sha256$");
        let start = std::time::Instant::now();
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Verify(password, stored, tx))?;
        let ok = rx.await.map_err(|e| crate::Error::Internal(e.to_string()))?;
        let took = start.elapsed().as_micros() as u64;
        let floor = self.legacy_micros.load(Ordering::Relaxed);
        if legacy {
            let avg = if floor == 0 { took } else { (floor * 7 + took) / 8 };
            self.legacy_micros.store(avg, Ordering::Relaxed);
        } else if took < floor {
            // Sleeping costs no CPU and holds no hashing thread.
            tokio::time::sleep(std::time::Duration::from_micros(floor - took)).await;
        }
        Ok(known && ok)
    }

    /// Measures the check of a stored Django hash once (at start, when imported accounts exist), so
    /// the padding holds from the first login on.
    pub async fn calibrate_legacy(&self, sample: String) {
        let _ = self.verify("calibration-not-a-password".into(), Some(sample)).await;
    }
}

fn argon(m: u32, t: u32, p: u32) -> Result<Argon2<'static>, crate::Error> {
    let params = Params::new(m, t, p, Some(32)).map_err(|e| crate::Error::Internal(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Runs Argon2id into `out`, reusing `blocks` (grown to the needed size once).
fn run(a: &Argon2<'_>, m: u32, password: &[u8], salt: &[u8], out: &mut [u8], blocks: &mut Vec<Block>) -> bool {
    if blocks.len() < m as usize {
        blocks.resize(m as usize, Block::default());
    }
    a.hash_password_into_with_memory(password, salt, out, &mut blocks[..m as usize]).is_ok()
}

/// PHC string format: `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`.
fn hash_with(password: &str, blocks: &mut Vec<Block>) -> Result<String, crate::Error> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|e| crate::Error::Internal(e.to_string()))?;
    let mut out = [0u8; 32];
    if !run(&argon(M_COST, T_COST, P_COST)?, M_COST, password.as_bytes(), &salt, &mut out, blocks) {
        return Err(crate::Error::Internal("argon2 failed".into()));
    }
    Ok(format!("$argon2id$v=19$m={M_COST},t={T_COST},p={P_COST}${}${}", B64.encode(salt), B64.encode(out)))
}

/// True for hashes that are not ours: a successful login replaces them with Argon2id.
pub fn needs_rehash(stored: &str) -> bool {
    !stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
}

/// Django's `pbkdf2_sha256$<iterations>$<salt>$<base64 hash>` (users imported by `chat import-django`).
fn verify_django_pbkdf2(password: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some("pbkdf2_sha256"), Some(iterations), Some(salt), Some(hash), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    // Django's defaults have grown to about a million; far above is a crafted row, not a password.
    let Some(iterations) =
        iterations.parse::<u32>().ok().filter(|n| *n <= 10_000_000).and_then(std::num::NonZeroU32::new)
    else {
        return false;
    };
    let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(hash) else {
        return false;
    };
    aws_lc_rs::pbkdf2::verify(
        aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt.as_bytes(),
        password.as_bytes(),
        &expected,
    )
    .is_ok()
}

fn verify_with(password: &str, stored: &str, blocks: &mut Vec<Block>) -> bool {
    if stored.starts_with("pbkdf2_sha256$") {
        return verify_django_pbkdf2(password, stored);
    }
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
    // Refuse parameters far above ours: a crafted hash must not make a login cost gigabytes.
    if m > 4 * M_COST || t > 8 * T_COST || p > 8 {
        return false;
    }
    let (Ok(salt), Ok(expected)) = (B64.decode(parts[4]), B64.decode(parts[5])) else {
        return false;
    };
    let Ok(a) = argon(m, t, p) else { return false };
    let mut out = vec![0u8; expected.len()];
    if !run(&a, m, password.as_bytes(), &salt, &mut out, blocks) {
        return false;
    }
    aws_lc_rs::constant_time::verify_slices_are_equal(&out, &expected).is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hash_and_verify() {
        let mut blocks = Vec::new();
        let h = super::hash_with("correct horse", &mut blocks).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(super::verify_with("correct horse", &h, &mut blocks));
        assert!(!super::verify_with("wrong horse", &h, &mut blocks));
        assert!(!super::verify_with("correct horse", "garbage", &mut blocks));
        assert!(!super::needs_rehash(&h));
    }

    #[test]
    fn django_pbkdf2_sha256() {
        use base64::Engine;
        let mut out = [0u8; 32];
        let n = std::num::NonZeroU32::new(1000).unwrap();
        aws_lc_rs::pbkdf2::derive(aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256, n, b"saltsalt", b"old secret", &mut out);
        let stored = format!("pbkdf2_sha256$1000$saltsalt${}", base64::engine::general_purpose::STANDARD.encode(out));
        let mut blocks = Vec::new();
        assert!(super::verify_with("old secret", &stored, &mut blocks));
        assert!(!super::verify_with("old secreT", &stored, &mut blocks));
        assert!(!super::verify_with("old secret", "pbkdf2_sha256$0$saltsalt$AAAA", &mut blocks));
        assert!(!super::verify_with("old secret", "pbkdf2_sha256$1000$saltsalt", &mut blocks));
        assert!(super::needs_rehash(&stored));
    }
}
