# Production image: gunicorn serving the app factory; data dir as a volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SANDBOX_DATA_DIR=/data

RUN groupadd --system sandbox && useradd --system --gid sandbox --home /app sandbox
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY audit ./audit
COPY policies ./policies
COPY products ./products
COPY sandbox ./sandbox
RUN pip install --no-cache-dir -c constraints.txt . && mkdir -p /data && chown sandbox:sandbox /data

USER sandbox
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/v1/health', timeout=2).status == 200 else 1)"

# `sandbox init` is idempotent: it creates the stores and the platform key on first start.
CMD ["sh", "-c", "sandbox init && exec gunicorn --bind 0.0.0.0:8000 --workers ${WEB_CONCURRENCY:-2} --worker-class gthread --threads ${SANDBOX_THREADS:-8} 'sandbox.app:create_app()'"]
