# relay-git-sync: no git binary in the image; Dulwich and Paramiko do all Git and SSH.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RELAY_GIT_DATA_DIR=/data \
    PORT=8000

RUN useradd --create-home --uid 10001 gitsync && mkdir /data && chown gitsync /data
WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY gitsync ./gitsync
RUN pip install --no-cache-dir .
COPY cli.py wsgi.py gunicorn.conf.py openapi.yaml ./

USER gitsync
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import os,urllib.request;urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT','8000'), timeout=4)"
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
