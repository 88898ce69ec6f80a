-- Accounts, login sessions (one per login: the refresh-token family), refresh tokens, throttling, keys.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    -- Lower-case ASCII; SQLite compares TEXT bytewise, which is code-point order.
    username      TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id),
    created_at  BIGINT NOT NULL,
    -- The latest `exp` of an access token issued for this session (bounds how long a revocation matters).
    access_exp  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions (id),
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE throttle_events (
    key  TEXT NOT NULL,
    at   BIGINT NOT NULL
);
CREATE INDEX throttle_events_key_at ON throttle_events (key, at);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    private_der TEXT NOT NULL,
    public_x    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);
