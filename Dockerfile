# Baton in a container: the server, git for repository work and bubblewrap for worker sandboxes.
# It runs as the unprivileged user `baton`; everything it writes (database, mirrors, worktrees,
# and the `.env` setup mode saves, since /app is not writable) goes to the volume
# /home/baton/data:
#   docker run -v baton-data:/home/baton/data -p 3000:3000 \
#     --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
#     --security-opt systempaths=unconfined --device /dev/net/tun baton
# The sandbox needs unprivileged user namespaces (Docker's default seccomp and AppArmor profiles
# refuse them) and a /proc it may mount; a setup command gets a network only with /dev/net/tun.
FROM python:3.11-slim

# util-linux (prlimit, setpriv, unshare) and mount come with the base image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git bubblewrap slirp4netns curl \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 baton \
    && install -d -o baton -g baton -m 700 /home/baton/data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY webhooks ./webhooks
# app.yml travels inside the package (bot/github/app.yml), so the wheel holds everything.
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
