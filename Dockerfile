# Tenantry operator image: multi-stage, non-root, read-only-root-filesystem friendly.
# Build: docker build -t ghcr.io/OWNER/tenantry:0.1.0 .
# Python is pinned to the exact version CI tests with.
FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Wheels for the package and every dependency; the runtime stage installs only these.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11.7-slim-bookworm
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin tenantry
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-compile /wheels/*.whl && rm -rf /wheels
# No .pyc writes at run time (the root filesystem is read-only); logs unbuffered to stdout.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# 8080: liveness (/healthz), 9090: Prometheus metrics.
EXPOSE 8080 9090
ENTRYPOINT ["tenantry", "run"]
CMD ["--liveness", "http://0.0.0.0:8080/healthz", "--metrics-port", "9090"]
