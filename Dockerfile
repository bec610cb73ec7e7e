# Parley in a container: `docker build -t parley .` then
#   docker run -p 8090:8090 -v parley-data:/data parley
# The data dir (/data: parley.db, keys/, attachments/) is a volume owned by the unprivileged
# user `parley`; flags go after the image name (`… parley parley serve --host 0.0.0.0 --data-dir
# /data --store postgresql://…`) or in PARLEY_* variables (`-e PARLEY_INTERNAL_KEY=…`).

# Build stage: the wheel and every dependency into a virtualenv that the runtime stage copies
# whole, so the runtime image carries no source tree, no pip cache and no build tools.
FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/parley/venv
WORKDIR /src
COPY . .
RUN /opt/parley/venv/bin/pip install .

FROM python:3.12-slim
ENV PATH=/opt/parley/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/parley/venv /opt/parley/venv
# A system user with no login shell; /data is made and owned before VOLUME, so a new named
# volume starts out owned by it (a bind mount must be writable by uid 10001 itself).
RUN groupadd --system --gid 10001 parley \
 && useradd --system --uid 10001 --gid parley --home-dir /data --shell /usr/sbin/nologin parley \
 && mkdir /data && chown parley:parley /data && chmod 0700 /data
USER parley
WORKDIR /data
VOLUME /data
EXPOSE 8090
# SIGTERM starts the drain (new runs 503, in-flight runs finish, streams get their last event);
# give the container longer than --drain-timeout (30 s) to stop: `docker stop -t 45`, or
# stop_grace_period in compose.
STOPSIGNAL SIGTERM
# /health answers 200, and 503 while draining; slim images have no curl, so Python asks.
# PARLEY_PORT, when set, is the port the server listens on, and the check follows it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('PARLEY_PORT') or '8090'; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=4).status == 200 else 1)"]
CMD ["parley", "serve", "--host", "0.0.0.0", "--data-dir", "/data"]
