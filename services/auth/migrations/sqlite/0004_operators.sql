-- Operator admins (granted only from the command line: `chat-auth admin grant <username>`).
ALTER TABLE users ADD COLUMN admin_at BIGINT;
-- The revocation poll reads recent revocations (made by any process, operators' commands included).
CREATE INDEX sessions_revoked_at ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;
