# syntax=docker/dockerfile:1
# Clickacall: one image for either role.
#   docker build -t clickacall .
#   docker run --rm --network host -e CLICKACALL_AUTH_SECRET=... clickacall \
#       relay --listen 0.0.0.0:3478 --relay-ip 203.0.113.7
# The default command reads /etc/clickacall/relay.toml (mount it read-only).

# --- builder: compile the Cython extensions into a wheel -------------------------------
FROM python:3.11-slim-bookworm AS builder

RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
# Build requirements (setuptools, wheel, Cython, pinned in pyproject.toml) are installed
# by pip in an isolated build environment. The wheel holds the compiled .so files, the
# .pxd/.pyi stubs and py.typed; generated .c files stay in build/ and are not shipped.
RUN pip wheel --no-cache-dir --no-deps -w /wheels . \
 && python -m zipfile -l /wheels/*.whl > /tmp/wheel-files \
 && grep -q '^ext/_fastpath\..*\.so ' /tmp/wheel-files \
 && ! grep -qE '\.(c|pyx) ' /tmp/wheel-files

# --- runtime: the wheel and its runtime dependencies, no compiler ------------------------
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY --from=builder /wheels /wheels
RUN pip install /wheels/*.whl \
 && rm -rf /wheels \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin clickacall \
 && mkdir -p /etc/clickacall

USER clickacall

# TURN/STUN listening port, and the default relay port range (--ports 49152-65535).
# Publishing a large UDP range through Docker's proxy is slow: prefer --network host.
EXPOSE 3478/udp
EXPOSE 49152-65535/udp

ENTRYPOINT ["clickacall"]
CMD ["relay", "--config", "/etc/clickacall/relay.toml"]
