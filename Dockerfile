# flannel-bot: slim, non-root. The audit database lives on a volume at /var/lib/flannel-bot.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLANNEL_BOT_TEMPLATES=/app/templates \
    FLANNEL_BOT_DB=/var/lib/flannel-bot/flannel-bot.db \
    FLANNEL_BOT_LOG_FORMAT=json

RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-client \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/flannel-bot --create-home flannel-bot

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY runbooks ./runbooks
# the import names flannel_bot and flannel_bot_runbooks: symlinks to bot/ and runbooks/ (README: Layout)
COPY flannel_bot ./flannel_bot
COPY flannel_bot_runbooks ./flannel_bot_runbooks
COPY templates ./templates
COPY examples ./examples
RUN pip install . && rm -rf build

USER flannel-bot
VOLUME ["/var/lib/flannel-bot"]
EXPOSE 3000
# /healthz answers "ok serving" or "ok standby" (a replica waiting for the Lease) on PORT
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD ["python", "-c", "import os,urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=4)"]
ENTRYPOINT ["flannel-bot"]
CMD ["serve"]
