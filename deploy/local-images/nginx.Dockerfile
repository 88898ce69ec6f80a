# Stand-in for nginx:1.27-alpine (see README.md): Debian's nginx behind an entry point that renders
# /etc/nginx/templates/*.template into /etc/nginx/conf.d/ as the official image does.
# hadolint ignore=DL3007
FROM chat-local/bookworm:latest
LABEL org.chat-backend.stand-in="true"
COPY nginx-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN rm -f /etc/nginx/sites-enabled/default
EXPOSE 80
STOPSIGNAL SIGQUIT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["nginx", "-g", "daemon off;"]
