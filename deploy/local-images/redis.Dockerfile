# Stand-in for redis:7-alpine (see README.md): Debian's Redis 7.0, run as the redis user, protected
# mode off as in the official image.
# hadolint ignore=DL3007
FROM chat-local/bookworm:latest
LABEL org.chat-backend.stand-in="true"
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
# hadolint ignore=DL3066
USER redis
WORKDIR /var/lib/redis
EXPOSE 6379
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["redis-server"]
