//! Token buckets: per-user budgets (sends, typing, conversation creations) refilled continuously.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;
use uuid::Uuid;

/// One budget: up to `burst` at once, refilled at `rate` per second.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn full(burst: f64) -> TokenBucket {
        TokenBucket { tokens: burst, at: Instant::now() }
    }

    /// Takes one token; false when none is left.
    pub fn take(&mut self, rate: f64, burst: f64) -> bool {
        self.refill(rate, burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn refill(&mut self, rate: f64, burst: f64) {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(burst);
        self.at = now;
    }

    /// Seconds until a token is back (for `Retry-After`).
    pub fn wait_secs(&self, rate: f64) -> u64 {
        if rate <= 0.0 { 60 } else { ((1.0 - self.tokens).max(0.0) / rate).ceil().max(1.0) as u64 }
    }
}

/// Budgets of many users, in one map behind one lock (held for a lookup and some arithmetic).
pub struct UserBudgets {
    buckets: Mutex<HashMap<Uuid, TokenBucket>>,
    rate: f64,
    burst: f64,
}

/// Users tracked before full (idle) buckets are dropped: bounds the map however many users send.
const TRACKED: usize = 100_000;

impl UserBudgets {
    pub fn new(rate: f64, burst: f64) -> UserBudgets {
        UserBudgets { buckets: Mutex::default(), rate: rate.max(0.0), burst: burst.max(1.0) }
    }

    /// Takes one token of `user`'s budget, or the seconds until one is back.
    pub fn take(&self, user: Uuid) -> Result<(), u64> {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= TRACKED && !map.contains_key(&user) {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, b| {
                b.refill(rate, burst);
                b.tokens < burst
            });
        }
        let b = map.entry(user).or_insert_with(|| TokenBucket::full(self.burst));
        if b.take(self.rate, self.burst) { Ok(()) } else { Err(b.wait_secs(self.rate)) }
    }

    /// Gives a token back (the action turned out not to count, e.g. an idempotent retry).
    pub fn refund(&self, user: Uuid) {
        if let Some(b) = self.buckets.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&user) {
            b.tokens = (b.tokens + 1.0).min(self.burst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_runs_out_and_refunds() {
        let b = UserBudgets::new(0.0, 2.0);
        let u = Uuid::now_v7();
        assert!(b.take(u).is_ok());
        assert!(b.take(u).is_ok());
        assert_eq!(b.take(u), Err(60));
        b.refund(u);
        assert!(b.take(u).is_ok());
        assert!(b.take(Uuid::now_v7()).is_ok(), "budgets are per user");
    }
}
