# The orchestrators service image.
#
#   make docker                      # offline: a Debian bookworm base built by debootstrap, wheels
#                                    # downloaded on the host (scripts/build_service_image.sh)
#   docker build -t orchestrators .  # with a registry and PyPI: FROM python:3.11-slim, pip installs
#
# Runs as an unprivileged user (uid 10001), binds 0.0.0.0:8088 inside the container, keeps its
# SQLite files in /var/lib/orchestrators (a volume). It does not mount the Docker socket: the tool
# sandbox needs a Docker engine, and handing a container the host's socket makes it host root
# (see docs/operations.md). So sandboxed tools answer sandbox_unavailable here, and readiness does
# not wait for Docker (ORCH_TOOL_SANDBOX_REQUIRED=0); point ORCH_SANDBOX_DOCKER_URL at a dedicated
# engine to enable them.
ARG BASE=python:3.11-slim
FROM ${BASE}

# Dependencies first (cached layer): from the wheelhouse when the build script provided one
# (build/wheels), otherwise from PyPI.
COPY requirements.lock build/wheel[s] /tmp/build/
RUN set -eu; \
    if ls /tmp/build/*.whl >/dev/null 2>&1; then \
        pip_wheel="$(ls /tmp/build/pip-*.whl)"; \
        python3 "$pip_wheel/pip" install --no-index --find-links /tmp/build --no-compile --no-cache-dir \
            --target /opt/orchestrators/packages -r /tmp/build/requirements.lock; \
    else \
        python3 -m pip install --no-cache-dir --no-compile --target /opt/orchestrators/packages \
            -r /tmp/build/requirements.lock; \
    fi; \
    rm -rf /tmp/build; \
    mkdir -p /var/lib/orchestrators; \
    grep -q '^orchestrators:' /etc/group || echo 'orchestrators:x:10001:' >> /etc/group; \
    grep -q '^orchestrators:' /etc/passwd || \
        echo 'orchestrators:x:10001:10001:orchestrators:/var/lib/orchestrators:/bin/false' >> /etc/passwd; \
    chown 10001:10001 /var/lib/orchestrators

COPY app /opt/orchestrators/app
COPY policies /opt/orchestrators/policies

ENV PYTHONPATH=/opt/orchestrators/packages:/opt/orchestrators \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORCH_HOST=0.0.0.0 \
    ORCH_PORT=8088 \
    ORCH_TOOL_SANDBOX_REQUIRED=0
WORKDIR /var/lib/orchestrators
VOLUME /var/lib/orchestrators
USER 10001:10001
EXPOSE 8088
CMD ["python3", "-m", "app"]
