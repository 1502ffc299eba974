# The generation service as one image: gunicorn serves the web tier, and the job workers
# run inside it (docs/operations.md). Built by `fly deploy`, or `docker build .`.
FROM python:3.11-slim-bookworm

# No .pyc files written at run time, logs unbuffered, no pip cache in the image.
# The database and results live under /data: a Fly volume mounted there keeps them
# (see fly.toml); `fly postgres attach` sets DATABASE_URL, which overrides this one.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000 \
    DATABASE_URL=sqlite:////data/generation.db \
    RESULTS_DIR=/data/results

WORKDIR /app

# Dependencies before the code, so that a code change reuses this layer.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# The service runs as `app`; the code stays owned by root, so `app` cannot change it.
RUN useradd --system --user-group --uid 10001 --home-dir /app --no-create-home app \
    && mkdir /data \
    && chown app:app /data

COPY docker-entrypoint.sh wsgi.py gunicorn.conf.py ./
COPY app ./app

EXPOSE 8000

# Slim images have no curl; Python is here anyway. Fly uses fly.toml's checks instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]

# Exec form, so gunicorn itself receives SIGTERM and drains (a shell would swallow it).
ENTRYPOINT ["/app/docker-entrypoint.sh"]
CMD ["gunicorn", "--config", "gunicorn.conf.py"]
