-- Users imported from the Django Channels backend (`chat import-django`): the old integer id of each,
-- so a second run imports nothing twice and the old WebSocket dialect can keep showing integer ids.
CREATE TABLE legacy_users (
    legacy_id BIGINT PRIMARY KEY,
    user_id   TEXT NOT NULL UNIQUE REFERENCES users (id)
);
