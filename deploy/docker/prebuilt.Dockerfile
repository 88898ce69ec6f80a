# An image from a service Dockerfile's `runtime-base` stage plus a binary built on the host, for
# machines that cannot pull the Rust build image (scripts/compose-up.sh):
#   docker build -f services/auth/Dockerfile --target runtime-base -t chat-auth:base .
#   docker build -f deploy/docker/prebuilt.Dockerfile --build-arg BASE=chat-auth:base \
#     --build-arg BIN=chat-auth -t chat-auth:dev dist/
# The context is the folder holding the binary.
ARG BASE
# hadolint ignore=DL3006
FROM ${BASE}
ARG BIN
COPY ${BIN} /usr/local/bin/${BIN}
