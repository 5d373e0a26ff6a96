# One image for both services; docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY vrec ./vrec
COPY consumers ./consumers
COPY trainer ./trainer
COPY data ./data
RUN pip install .

RUN useradd --create-home --uid 10001 vrec && mkdir -p /var/lib/vrec \
    && chown vrec /var/lib/vrec
USER vrec
WORKDIR /var/lib/vrec
ENTRYPOINT ["vrec"]
