//! Authenticated bus messages: an HMAC-SHA256 over the topic, a timestamp and the payload, with a key
//! only the services hold (`BUS_SIGNING_KEY`).
//!
//! Anyone who can PUBLISH to the broker could otherwise add a user to a conversation's live stream
//! or forge a revocation. A sealed message is `chs1 ‖ at (u64 ms, big-endian) ‖ tag (32) ‖ payload`;
//! receivers drop (and count) any message whose tag does not verify for the topic it arrived on, or
//! whose timestamp is more than `MAX_SKEW` away from now (a captured message cannot be replayed later).

use bytes::Bytes;
use std::time::Duration;

pub const KEY_VAR: &str = "BUS_SIGNING_KEY";
pub const KEY_FILE_VAR: &str = "BUS_SIGNING_KEY_FILE";

const MAGIC: &[u8; 4] = b"chs1";
const HEAD: usize = 4 + 8 + 32;
/// Publish-to-receive time accepted (clock differences between hosts plus broker delay).
pub const MAX_SKEW: Duration = Duration::from_secs(60);

/// The shared key; `Debug` never shows it.
#[derive(Clone)]
pub struct BusKey(aws_lc_rs::hmac::Key);

impl std::fmt::Debug for BusKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BusKey(<redacted>)")
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl BusKey {
    pub fn from_bytes(key: &[u8; 32]) -> BusKey {
        BusKey(aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key))
    }

    /// From 64 hex characters (32 bytes; `openssl rand -hex 32`).
    pub fn from_hex(hex: &str) -> Option<BusKey> {
        chat_settings::hex32(hex).map(|k| BusKey::from_bytes(&k))
    }

    fn tag(&self, topic: &str, at: &[u8], payload: &[u8]) -> aws_lc_rs::hmac::Tag {
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&self.0);
        ctx.update(&(topic.len() as u32).to_be_bytes());
        ctx.update(topic.as_bytes());
        ctx.update(at);
        ctx.update(payload);
        ctx.sign()
    }

    /// The sealed form of `payload` for `topic` (the full topic, prefix included).
    pub fn seal(&self, topic: &str, payload: &[u8]) -> Bytes {
        let at = now_ms().to_be_bytes();
        let tag = self.tag(topic, &at, payload);
        let mut out = Vec::with_capacity(HEAD + payload.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&at);
        out.extend_from_slice(tag.as_ref());
        out.extend_from_slice(payload);
        Bytes::from(out)
    }

    /// The payload of a sealed message that arrived on `topic`, or None (forged, altered, moved to
    /// another topic, unsealed, or too old) — counted in `bus_envelopes_rejected_total`.
    pub fn open(&self, topic: &str, sealed: Bytes) -> Option<Bytes> {
        let ok = sealed.len() >= HEAD && &sealed[..4] == MAGIC;
        let verdict = ok.then(|| {
            let at = &sealed[4..12];
            let sent = u64::from_be_bytes(at.try_into().unwrap_or([0; 8]));
            let skew = now_ms().abs_diff(sent);
            let expected = self.tag(topic, at, &sealed[HEAD..]);
            let good = aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_ref(), &sealed[12..HEAD]).is_ok();
            (good, skew <= MAX_SKEW.as_millis() as u64)
        });
        match verdict {
            Some((true, true)) => Some(sealed.slice(HEAD..)),
            other => {
                let reason = match other {
                    Some((true, false)) => "stale",
                    Some((false, _)) => "bad_tag",
                    _ => "unsealed",
                };
                metrics::counter!("bus_envelopes_rejected_total", "reason" => reason).increment(1);
                tracing::warn!(topic, reason, "bus message rejected: not sealed with this deployment's key");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_refuses_forgeries() {
        let k = BusKey::from_hex(&"11".repeat(32)).unwrap();
        let sealed = k.seal("chat.conv.x", b"payload");
        assert_eq!(k.open("chat.conv.x", sealed.clone()).as_deref(), Some(&b"payload"[..]));
        assert!(k.open("chat.conv.y", sealed.clone()).is_none(), "bound to its topic");
        let mut altered = sealed.to_vec();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(k.open("chat.conv.x", Bytes::from(altered)).is_none(), "altered payload");
        assert!(k.open("chat.conv.x", Bytes::from_static(b"{\"kind\":\"typing\"}\n{}")).is_none(), "unsealed");
        let other = BusKey::from_hex(&"22".repeat(32)).unwrap();
        assert!(other.open("chat.conv.x", sealed).is_none(), "another key");
        assert!(BusKey::from_hex("abc").is_none());
        assert!(!format!("{k:?}").contains("11"));
    }
}
