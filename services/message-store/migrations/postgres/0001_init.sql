-- Conversations, members, messages with a gapless per-conversation seq, and the transactional outbox.
CREATE TABLE conversations (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    title         TEXT,
    created_at    BIGINT NOT NULL,
    -- Allocated by `UPDATE ... SET last_seq = last_seq + 1` inside the insert's transaction: the row
    -- lock serialises senders of one conversation, so seqs have no gaps and no reuse.
    last_seq      BIGINT NOT NULL DEFAULT 0,
    -- Time of the latest message, else creation time: the order of conversation lists.
    last_activity BIGINT NOT NULL,
    -- "<smaller uuid>:<larger uuid>" for direct conversations: at most one per pair.
    direct_key    TEXT UNIQUE
);

CREATE TABLE members (
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    user_id         TEXT NOT NULL,
    role            TEXT NOT NULL,
    joined_at       BIGINT NOT NULL,
    last_read_seq   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
);
-- A user's conversations (lists, edge membership).
CREATE INDEX members_user ON members (user_id, conversation_id);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    seq             BIGINT NOT NULL,
    sender_id       TEXT NOT NULL,
    body            TEXT,
    client_msg_id   TEXT,
    created_at      BIGINT NOT NULL,
    edited_at       BIGINT,
    deleted_at      BIGINT
);
-- History pages (after/before/latest) and unread counts are range scans of this index.
CREATE UNIQUE INDEX messages_conv_seq ON messages (conversation_id, seq);
-- Idempotent sends: one message per (conversation, sender, client_msg_id).
CREATE UNIQUE INDEX messages_idempotency ON messages (conversation_id, sender_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;

CREATE TABLE outbox (
    id         BIGSERIAL PRIMARY KEY,
    topic      TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
