# Baton in a container: the server, git for repository work and bubblewrap for worker sandboxes.
# The sandbox needs unprivileged user namespaces (a seccomp/AppArmor profile that allows them);
# a setup command gets a network only with /dev/net/tun passed in (--device /dev/net/tun).
FROM python:3.11-slim

# util-linux (prlimit, setpriv, unshare) and mount come with the base image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git bubblewrap slirp4netns curl \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 baton
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY webhooks ./webhooks
RUN pip install --no-cache-dir .

USER baton
ENV BATON_HOST=0.0.0.0 \
    BATON_PORT=3000 \
    BATON_DATA_DIR=/home/baton/data
VOLUME ["/home/baton/data"]
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD curl --fail --silent http://127.0.0.1:3000/healthz || exit 1
CMD ["sh", "-c", "baton db upgrade && exec baton serve"]
