# The hub's image for docker-compose.yml: `carehub serve` on the configured services.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY hub ./hub
COPY devices ./devices
COPY simulators ./simulators
# The wheel carries the benchmarks too (pyproject.toml), and `carehub bench` with them.
COPY bench ./bench
RUN pip install . && useradd --system --home /var/lib/carehub carehub \
    && mkdir -p /var/lib/carehub/spool && chown -R carehub /var/lib/carehub

USER carehub
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
CMD ["carehub", "serve"]
