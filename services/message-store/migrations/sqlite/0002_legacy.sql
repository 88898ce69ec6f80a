-- Conversations and messages imported from the Django Channels backend (`chat import-django`).
-- Two old direct conversations between the same pair map to one new conversation.
CREATE TABLE legacy_conversations (
    legacy_id       BIGINT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id)
);
CREATE INDEX legacy_conversations_new ON legacy_conversations (conversation_id);

CREATE TABLE legacy_messages (
    legacy_id  BIGINT PRIMARY KEY,
    message_id TEXT NOT NULL REFERENCES messages (id)
);
