# Serving image: slim Python, serving requirements only, non-root. The committed models are
# copied in as the default local folder; with MODELSERVE_MODEL_STORE set they are not used, and
# `--build-arg REQUIREMENTS=requirements-store.txt` adds the store libraries (fsspec, s3fs, gcsfs).
FROM python:3.11-slim

ARG REQUIREMENTS=requirements.txt

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000

WORKDIR /srv

COPY requirements.txt requirements-store.txt ./
RUN pip install --no-cache-dir -r "${REQUIREMENTS}" \
    && useradd --create-home --uid 10001 modelserve \
    && mkdir -p /srv/instance /var/cache/modelserve \
    && chown modelserve /srv/instance /var/cache/modelserve

COPY --chown=10001 app/ app/
COPY --chown=10001 saved_models/ saved_models/
COPY --chown=10001 main.py gunicorn.conf.py ./

USER 10001
EXPOSE 8000

# Healthy only once every model is loaded, verified and warmed up.
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/v2/health/ready', timeout=2)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "main:app"]
