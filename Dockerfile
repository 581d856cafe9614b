# syntax=docker/dockerfile:1
# Clickacall: one image for either role.
#   docker build -t clickacall .
#   docker run --rm --network host -e CLICKACALL_AUTH_SECRET=... clickacall \
#       relay --listen 0.0.0.0:3478 --relay-ip 203.0.113.7
#   docker run --rm -p 8080:8080 -e CLICKACALL_TOKEN_KEY=... clickacall \
#       control --listen 0.0.0.0:8080 --db postgresql://...
# The default command runs a relay node from /etc/clickacall/relay.toml (mount it read-only).
# Build and install steps are deploy/wheel.sh's, the same the packaging test runs.

# --- front: the web front's one runtime npm package (uPlot, the dashboard's charts), as
# package-lock.json pins it; copied into the package the way `make` copies it --------------
FROM node:20-bookworm-slim AS front
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# --- builder: compile the Cython extensions into a wheel -------------------------------
FROM python:3.11-slim-bookworm AS builder

RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
COPY --from=front /src/node_modules/uplot/LICENSE /src/node_modules/uplot/dist/uPlot.min.css \
     /src/node_modules/uplot/dist/uPlot.esm.js control/web/static/vendor/uplot/
RUN PYTHON=python deploy/wheel.sh build /wheels

# --- runtime: the wheel and its runtime dependencies, no compiler ------------------------
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY --from=builder /wheels /wheels
COPY deploy/wheel.sh /usr/local/lib/clickacall/wheel.sh
RUN /usr/local/lib/clickacall/wheel.sh install /wheels python \
 && rm -rf /wheels \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin clickacall \
 && mkdir -p /etc/clickacall

USER clickacall

# TURN/STUN listening port (UDP, and TCP/TLS when --listen-tcp / --listen-tls are given: 3478,
# 443 or 5349 by convention), and the default relay port range (--ports 49152-65535).
# Publishing a large UDP range through Docker's proxy is slow: prefer --network host.
# The runtime stage's libssl3 (the base image's, which Python's ssl uses too) serves ext/_stream.
EXPOSE 3478/udp
EXPOSE 3478/tcp
EXPOSE 443/tcp
EXPOSE 49152-65535/udp

ENTRYPOINT ["clickacall"]
# the relay role; `docker run ... clickacall control ...` runs the control plane instead
CMD ["relay", "--config", "/etc/clickacall/relay.toml"]
