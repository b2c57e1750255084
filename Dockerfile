# One image for every RoboSense process; the compose file picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml README.md constraints.txt ./
RUN mkdir -p telemetry ingest bridge api edge_simulator db loadtest mqtt_auth \
    && touch telemetry/__init__.py ingest/__init__.py bridge/__init__.py api/__init__.py edge_simulator/__init__.py \
       db/__init__.py loadtest/__init__.py mqtt_auth/__init__.py \
    && pip install -c constraints.txt . && pip uninstall -y robosense

COPY telemetry telemetry
COPY ingest ingest
COPY bridge bridge
COPY api api
COPY edge_simulator edge_simulator
COPY db db
COPY mqtt_auth mqtt_auth
# /keys belongs to the image's user, so a new volume mounted there (compose: api-keys) does too.
RUN pip install --no-deps -c constraints.txt . && useradd --system --uid 10001 robosense \
    && mkdir /keys && chown robosense /keys && chmod 700 /keys
USER robosense
