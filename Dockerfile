# linebridge: the bridge (and, as a test rig, the PLC simulator) in one image.
#   docker build -t linebridge .      (or `make image`: docker, podman or buildah, and its checks)
#   docker run -p 4840:4840 -v $PWD/mappings:/config -v linebridge-data:/data linebridge
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# The same install step as the Makefile (a virtual environment, the pinned constraints), without
# the dev extras; a venv also works on a Debian base whose python3 is externally managed
# (`make image` builds FROM one where no registry is reachable: .ci/image).
COPY pyproject.toml README.md constraints.txt ./
COPY bridge ./bridge
COPY plc_sim ./plc_sim
RUN python3 -m venv /opt/linebridge \
 && /opt/linebridge/bin/pip install -c constraints.txt . \
 && rm -rf /app/bridge /app/plc_sim \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin linebridge \
 && mkdir -p /config /data && chown linebridge /data
ENV PATH=/opt/linebridge/bin:$PATH
COPY mappings /config

USER linebridge
VOLUME ["/config", "/data"]
EXPOSE 4840

# Health: ask the running bridge over OPC UA which line it serves (GetEndpoints: no session needed).
HEALTHCHECK --interval=15s --timeout=10s --start-period=20s --retries=3 \
  CMD ["linebridge", "health", "--endpoint", "opc.tcp://127.0.0.1:4840/", "--timeout", "5"]

# Listen on all interfaces inside the container, secured (docs/security.md): certificates in
# /data/pki, users in /data/users.yaml. Publish the port to choose who reaches it.
ENTRYPOINT ["linebridge", "run", "--mapping", "/config/ac_line.yaml", "--data-dir", "/data", \
            "--opcua-endpoint", "opc.tcp://0.0.0.0:4840/", "--security"]
