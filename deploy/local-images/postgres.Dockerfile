# Stand-in for postgres:16-alpine (see README.md): Debian's PostgreSQL 15 behind an entry point
# that honours the official image's variables and initialisation scripts.
# hadolint ignore=DL3007
FROM chat-local/bookworm:latest
LABEL org.chat-backend.stand-in="true"
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
