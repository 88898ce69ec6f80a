#!/bin/sh
# Runs once when the PostgreSQL container initialises its data directory (docker-entrypoint-initdb.d):
# one role per service, each owning only its own schema. message-store's credentials cannot read the
# auth schema (users, sessions, signing keys) and auth's cannot read messages.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE chat_auth LOGIN PASSWORD '${AUTH_DB_PASSWORD}';
CREATE ROLE chat_messages LOGIN PASSWORD '${MESSAGES_DB_PASSWORD}';
CREATE SCHEMA auth AUTHORIZATION chat_auth;
CREATE SCHEMA messages AUTHORIZATION chat_messages;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON DATABASE ${POSTGRES_DB} FROM PUBLIC;
GRANT CONNECT ON DATABASE ${POSTGRES_DB} TO chat_auth, chat_messages;
SQL
