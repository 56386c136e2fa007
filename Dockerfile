# kline-tui's recorder in a container, with its API on port 8765 (README, "Run it as a service").
#
#   docker build -t kline-tui .
#   docker run -d --name kline-tui --stop-timeout 25 -p 127.0.0.1:8765:8765 \
#       -e KLINE_TUI_TOKEN="$(cat token)" -v kline-data:/data kline-tui usdm:BTCUSDT:1m
#   KLINE_TUI_TOKEN="$(cat token)" kline-tui attach http://127.0.0.1:8765
#
# Arguments after the image name are `kline-tui record`'s: streams, `--demo`, `-v`, and
# `--config /etc/kline-tui/config.toml` with a config mounted there (read-only is fine).
#
# The token: the API listens on 0.0.0.0 inside the container (Docker forwards a published port to
# the container's own interface, never to its loopback), and on any address but loopback the recorder refuses
# to start without a token set explicitly, which then guards every endpoint, /healthz and
# /metrics included. Pass it as KLINE_TUI_TOKEN (or name a mounted secret in the config's
# [service] token_file, and give the HEALTHCHECK its token some other way).
#
# The stop: `docker stop` sends SIGTERM, then SIGKILL after 10 s by default. The recorder's stop
# (write what is buffered, close, fetch the candles known missing, write again) may take
# recorder.stop_timeout_s, 15 s by default, and ends itself at most 5 s past that: run it with
# `--stop-timeout 25` (compose: `stop_grace_period: 25s`), or set stop_timeout_s to 4 to fit
# Docker's default. A SIGKILL loses only the unflushed buffer, fetched again at the next start.

# -- build: the package and its dependencies in a virtual environment, copied whole below -------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/kline-tui
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kline_tui ./kline_tui
# pip compiles the bytecode now: the root-owned venv cannot be written at run time, and a start
# that compiled Polars' and aiohttp's modules every time would be seconds slower.
RUN /opt/kline-tui/bin/pip install .

# -- run: no compiler, no pip cache, no source tree; a user of its own --------------------------
FROM python:3.11-slim
# A fixed uid, so that a folder bind-mounted on /data can be given to it: chown 10001 DIR.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/kline-tui \
        --shell /usr/sbin/nologin kline-tui \
    && install -d -o kline-tui -g kline-tui -m 0750 /data
COPY --from=build /opt/kline-tui /opt/kline-tui
# PYTHONFAULTHANDLER: a hung process killed with SIGABRT prints every thread's stack first.
ENV PATH=/opt/kline-tui/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1 \
    PYTHONUNBUFFERED=1
USER kline-tui
WORKDIR /home/kline-tui
# The dataset: a named volume or a bind mount survives the container.
VOLUME ["/data"]
EXPOSE 8765
STOPSIGNAL SIGTERM
# 200 while recording (or waiting on an unreachable exchange within its retry policy), 503 with
# the reasons otherwise. Python's urllib, as the slim image has no curl; an HTTP error or a
# refused connection raises, and the exit code 1 means unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request as r; \
        token = os.environ.get('KLINE_TUI_TOKEN', ''); \
        r.urlopen(r.Request('http://127.0.0.1:8765/healthz', \
                            headers={'Authorization': 'Bearer ' + token}), timeout=4)"
ENTRYPOINT ["kline-tui", "record", "--listen", "0.0.0.0:8765", "--data-dir", "/data"]
