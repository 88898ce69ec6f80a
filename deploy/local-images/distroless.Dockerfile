# Stand-in for gcr.io/distroless/cc-debian12:nonroot (see README.md).
# hadolint ignore=DL3007
FROM chat-local/bookworm:latest
LABEL org.chat-backend.stand-in="true"
USER 65532:65532
WORKDIR /home/nonroot
