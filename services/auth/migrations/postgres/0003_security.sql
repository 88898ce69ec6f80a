-- Accounts switched off (an operator, or a deactivated Django account brought over by the import):
-- they cannot log in or refresh.
ALTER TABLE users ADD COLUMN disabled_at BIGINT;

-- Throttling by fixed window: one row per key, reserved atomically (an UPSERT) before any password
-- hashing, so concurrent attempts cannot all pass the check. Keys hold a hash, never raw input.
-- (`throttle_events` is no longer written; it stays until every replica runs this version.)
CREATE TABLE throttle_counters (
    key          TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL,
    n            BIGINT NOT NULL
);
CREATE INDEX throttle_counters_window ON throttle_counters (window_start);

-- The revocation poll reads revoked sessions whose tokens may still be live; the purge finds
-- expired refresh tokens and sessions by time.
CREATE INDEX sessions_revoked_exp ON sessions (access_exp) WHERE revoked_at IS NOT NULL;
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);
