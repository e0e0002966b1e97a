# relay-git-sync: no git binary in the image; Dulwich and Paramiko do all Git and SSH.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RELAY_GIT_DATA_DIR=/data \
    PORT=8000

# A fixed numeric user, so orchestrators can check "runs as non-root" without
# reading /etc/passwd; /data is the only place it writes.
RUN useradd --no-log-init --create-home --uid 10001 --user-group gitsync \
    && mkdir /data && chown 10001:10001 /data

WORKDIR /src
# The package, its console script and the gunicorn settings (installed under
# /usr/local/share/relay-git-sync, where `relay-git-sync serve` finds them).
COPY setup.cfg pyproject.toml README.md gunicorn.conf.py wsgi.py ./
COPY gitsync ./gitsync
RUN pip install --no-cache-dir . && rm -rf /src
WORKDIR /data

USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
# /health answers 200 while the service accepts webhooks.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]
ENTRYPOINT ["relay-git-sync"]
CMD ["serve"]
