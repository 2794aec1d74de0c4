# The shotstamp service image.
# On its embedded SQLite store (one container):
#   docker build -t shotstamp .
#   docker run -p 8080:8080 -v shotstamp-data:/data shotstamp
#   docker exec <container> shotstamp-service keys create --seller acme
#   docker exec <container> shotstamp-service signing-key rotate   # keys live in /data/keys
# Anchors are installed but off: set SHOTSTAMP_TSA_URL and/or SHOTSTAMP_EVM_RPC_URL
# (the EVM key is /data/evm.key; `shotstamp-service anchors evm-address` to fund it).
# On PostgreSQL with several replicas (the production path): deploy/compose.yaml,
# which sets SHOTSTAMP_DATABASE_URL and mounts one signing-key directory into
# every replica (SHOTSTAMP_SIGNING_KEY_DIR); replicas never generate a key.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY sdk sdk
COPY service service
RUN python -m venv /opt/shotstamp \
 && /opt/shotstamp/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/shotstamp/bin/pip install --no-cache-dir '.[service,tsa,chain]'

FROM python:3.11-slim-bookworm
COPY --from=build /opt/shotstamp /opt/shotstamp
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin shotstamp \
 && mkdir -p /data && chown shotstamp:shotstamp /data
ENV PATH=/opt/shotstamp/bin:$PATH \
    SHOTSTAMP_DATA_DIR=/data \
    SHOTSTAMP_HOST=0.0.0.0 \
    SHOTSTAMP_PORT=8080 \
    PYTHONUNBUFFERED=1
USER shotstamp
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SHOTSTAMP_PORT','8080'), timeout=2)" || exit 1
# SIGTERM stops gracefully: in-flight uploads finish and pending ones are sealed.
STOPSIGNAL SIGTERM
CMD ["shotstamp-service", "serve"]
