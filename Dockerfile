# cronsvc: one instance per container. Configure with CRONSVC_<SECTION>_<KEY>
# environment variables or a config file at /etc/cronsvc/config.toml.
# It listens on 0.0.0.0, so it refuses to start without API tokens: set
# CRONSVC_SERVER_API_TOKENS, or CRONSVC_SERVER_API_TOKENS_FILE to a mounted secret.
# On its own it keeps jobs and logs in SQLite under /var/lib/cronsvc: give that
# a named volume (docker run -v cronsvc-data:/var/lib/cronsvc ...) to keep them
# across a new container.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CRONSVC_SERVER_HOST=0.0.0.0 \
    CRONSVC_SERVER_PORT=8080 \
    CRONSVC_STORE_URL=sqlite:////var/lib/cronsvc/cronsvc.db

RUN groupadd --system cronsvc \
    && useradd --system --gid cronsvc --home-dir /var/lib/cronsvc --create-home cronsvc
# The SQLite file (the default store) outlives the container; a named volume
# mounted here starts with the directory's owner, cronsvc.
VOLUME ["/var/lib/cronsvc"]

WORKDIR /opt/cronsvc
COPY pyproject.toml README.md LICENSE ./
COPY cronsvc ./cronsvc
RUN pip install '.[uvloop]'

USER cronsvc
EXPOSE 8080
# Asks the port the service listens on (CRONSVC_SERVER_PORT, 8080 unless set),
# with the image's Python: the slim image has no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import os, sys, urllib.request; port = os.environ.get('CRONSVC_SERVER_PORT', '8080'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status == 200 else 1)"

STOPSIGNAL SIGTERM
ENTRYPOINT ["cronsvc", "serve"]
