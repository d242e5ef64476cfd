"""The production deployment files, checked without a Docker engine.

`docker-compose config -q` (Debian's docker-compose; CI installs it and must run it) validates the
file and its interpolation; PyYAML then checks what a reviewer would: every service is there, every
image is pinned, every `BREADCRUMB_*` variable the deployment sets is a field of the one settings
class, every `breadcrumb` command (and option) it runs exists in the CLI, health checks back every
`service_healthy` dependency, the one-shot jobs are jobs, and the worker can be scaled.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import typer.main
import yaml

from store.settings import REPO_ROOT, Settings
from worker.cli import app

COMPOSE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
REQUIRED_ENV = {"POSTGRES_PASSWORD": "pg-secret", "TEMPORAL_DB_PASSWORD": "temporal-secret",
                "BREADCRUMB_WRITE_KEYS": "wk_compose", "BREADCRUMB_ADMIN_TOKEN": "admin-compose"}
SERVICES = {"postgresql", "temporal-schema", "temporal", "temporal-namespace", "temporal-ui",
            "search-attributes", "migrate", "api", "worker"}
OUR_IMAGE = "breadcrumb"
JOBS = {"temporal-schema", "temporal-namespace", "search-attributes", "migrate"}
SETTINGS_FIELDS = {name.upper() for name in Settings.model_fields}
BREADCRUMB_VAR = re.compile(r"\bBREADCRUMB_([A-Z0-9_]+)\b")


def _compose_binary() -> str | None:
    found = shutil.which("docker-compose")
    if found is None and os.environ.get("CI") == "true":
        pytest.fail("docker-compose is not installed; .ci/run installs it (apt-get install -y docker-compose)")
    return found


def _run_config(extra_env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    binary = _compose_binary()
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install -y docker-compose); CI always runs this")
    env = {k: v for k, v in os.environ.items() if k not in REQUIRED_ENV and not k.startswith("BREADCRUMB_")}
    env.update(extra_env)
    env["COMPOSE_PROJECT_NAME"] = "breadcrumbtest"
    return subprocess.run([binary, "-f", str(COMPOSE), "config", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def rendered() -> dict:
    """The file as docker-compose resolves it (anchors merged, variables interpolated)."""
    result = _run_config(REQUIRED_ENV)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def _cli() -> dict:
    return typer.main.get_command(app).commands


def _check_breadcrumb_command(argv: list[str], where: str) -> None:
    commands = _cli()
    assert argv, f"{where}: empty command"
    name, *rest = argv
    assert name in commands, f"{where}: `breadcrumb {name}` is not a CLI command (have: {', '.join(commands)})"
    options = {opt for param in commands[name].params for opt in (*param.opts, *param.secondary_opts)}
    for arg in rest:
        if arg.startswith("-"):
            assert arg.split("=")[0] in options, f"{where}: `breadcrumb {name}` has no option {arg}"


def test_compose_config_is_valid(rendered):
    """`docker-compose config` accepted the file (the fixture asserts its exit status)."""
    assert rendered["services"]


def test_required_secrets_are_demanded_by_name():
    text = COMPOSE.read_text()
    for name in REQUIRED_ENV:
        assert re.search(r"\$\{" + name + r":\?[^}]+\}", text), f"{name} should be required (${{{name}:?…}})"
    result = _run_config({k: v for k, v in REQUIRED_ENV.items() if k != "POSTGRES_PASSWORD"}, "-q")
    assert result.returncode != 0, "compose accepted a missing POSTGRES_PASSWORD"
    assert "POSTGRES_PASSWORD" in result.stderr, result.stderr


def test_services_and_pinned_images(rendered, raw):
    services = rendered["services"]
    assert SERVICES <= set(services), f"missing services: {SERVICES - set(services)}"
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image"
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" and re.search(r"\d", tag), f"{name}: image {image} is not pinned"
        assert "auto-setup" not in image, f"{name}: temporalio/auto-setup is deprecated"
    assert services["postgresql"]["image"].startswith("postgres:16"), "PostgreSQL 16"
    server = services["temporal"]["image"]
    assert server.startswith("temporalio/server:")
    admin_tools = {services[s]["image"] for s in ("temporal-schema", "temporal-namespace")}
    assert admin_tools == {server.replace("temporalio/server", "temporalio/admin-tools")}, \
        "admin-tools must match the server version (its schema files are the server's)"
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    ours = [s for s, svc in services.items() if svc["image"].split(":")[0] == OUR_IMAGE]
    assert set(ours) == {"search-attributes", "migrate", "api", "worker"}
    assert all(services[s].get("build") for s in ours), "our services build from the Dockerfile"
    assert len({services[s]["image"] for s in ours}) == 1, "one image for every Breadcrumb role"


def _breadcrumb_variables_set() -> dict[str, set[str]]:
    """Every BREADCRUMB_* name the deployment sets or reads, by where."""
    found: dict[str, set[str]] = {}
    for path in (COMPOSE, DOCKERFILE, ENV_EXAMPLE):
        for match in BREADCRUMB_VAR.finditer(path.read_text()):
            found.setdefault(match.group(1), set()).add(path.name)
    return found


def test_every_breadcrumb_variable_is_a_setting(rendered):
    found = _breadcrumb_variables_set()
    for service in rendered["services"].values():
        for key in (service.get("environment") or {}):
            if key.startswith("BREADCRUMB_"):
                found.setdefault(key.removeprefix("BREADCRUMB_"), set()).add("rendered compose")
    assert found, "no BREADCRUMB_* variables found at all"
    unknown = {f"BREADCRUMB_{name} ({', '.join(sorted(where))})" for name, where in found.items()
               if name not in SETTINGS_FIELDS}
    assert not unknown, f"not fields of store.settings.Settings: {sorted(unknown)}"


def test_breadcrumb_services_are_wired(rendered):
    services = rendered["services"]
    for name in ("search-attributes", "migrate", "api", "worker"):
        env = services[name]["environment"]
        url = env["BREADCRUMB_DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://breadcrumb:pg-secret@postgresql:5432/"), f"{name}: {url}"
        assert env["BREADCRUMB_TEMPORAL_ADDRESS"] == "temporal:7233"
        assert env["BREADCRUMB_WRITE_KEYS"] == REQUIRED_ENV["BREADCRUMB_WRITE_KEYS"]
        assert env["BREADCRUMB_ADMIN_TOKEN"] == REQUIRED_ENV["BREADCRUMB_ADMIN_TOKEN"]
        journeys = env["BREADCRUMB_JOURNEYS"]
        mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in services[name].get("volumes", [])]
        assert any(m.split(":")[1] == journeys for m in mounts), f"{name}: {journeys} is not mounted"
        # The settings class accepts what compose passes.
        Settings(**{k.removeprefix("BREADCRUMB_").lower(): v for k, v in env.items() if k.startswith("BREADCRUMB_")
                    and k != "BREADCRUMB_JOURNEYS"})
    temporal = services["temporal"]["environment"]
    assert temporal["DB"] == "postgres12" and temporal["POSTGRES_SEEDS"] == "postgresql"
    assert temporal["POSTGRES_PWD"] == REQUIRED_ENV["TEMPORAL_DB_PASSWORD"]
    assert services["temporal-schema"]["environment"]["POSTGRES_PWD"] == REQUIRED_ENV["TEMPORAL_DB_PASSWORD"]
    assert services["postgresql"]["environment"]["TEMPORAL_DB_PASSWORD"] == REQUIRED_ENV["TEMPORAL_DB_PASSWORD"]


def test_temporal_schema_and_namespace_jobs():
    schema = (REPO_ROOT / "deploy" / "temporal" / "setup-schema.sh").read_text()
    for step in ("create", "setup-schema -v 0.0", "update-schema -d"):
        assert step in schema
    assert "temporal-sql-tool --plugin postgres12" in schema
    assert "$SCHEMA_DIR/$schema/versioned" in schema and '"$VISIBILITY_DBNAME:visibility"' in schema
    namespace = (REPO_ROOT / "deploy" / "temporal" / "create-namespace.sh").read_text()
    assert "temporal operator namespace create" in namespace and "operator cluster health" in namespace
    dynamic = yaml.safe_load((REPO_ROOT / "deploy" / "temporal" / "dynamicconfig" / "breadcrumb.yaml").read_text())
    assert all(isinstance(v, list) and "value" in v[0] for v in dynamic.values())


def test_mounted_files_exist(rendered):
    for name, service in rendered["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("/"):
                assert Path(source).exists(), f"{name} mounts {source}, which is not in the repository"
    assert (REPO_ROOT / "deploy" / "temporal" / "dynamicconfig" / "breadcrumb.yaml").exists()
    dynamic_path = rendered["services"]["temporal"]["environment"]["DYNAMIC_CONFIG_FILE_PATH"]
    assert dynamic_path == "/etc/temporal/config/dynamicconfig/breadcrumb.yaml"


def test_every_breadcrumb_command_exists(rendered):
    for name, service in rendered["services"].items():
        if service["image"].split(":")[0] != OUR_IMAGE:
            continue
        command = service.get("command")
        assert isinstance(command, list), f"{name}: give the command as a list"
        _check_breadcrumb_command(command, f"compose service {name}")
    dockerfile = DOCKERFILE.read_text()
    entrypoint = re.search(r"^ENTRYPOINT\s+(\[.*\])", dockerfile, re.M)
    assert entrypoint and yaml.safe_load(entrypoint.group(1)) == ["breadcrumb"]
    cmd = re.search(r"^CMD\s+(\[.*\])", dockerfile, re.M)
    assert cmd, "the Dockerfile has a default command"
    _check_breadcrumb_command(yaml.safe_load(cmd.group(1)), "Dockerfile CMD")
    for match in re.finditer(r"\bbreadcrumb\s+([a-z][a-z-]*)", dockerfile):
        if match.group(1) not in ("--help",):
            # prose like "Breadcrumb's production image" is capitalised; only real invocations match
            _check_breadcrumb_command([match.group(1)], "Dockerfile RUN")


def test_health_checks_back_the_dependencies(rendered):
    services = rendered["services"]
    for name in ("postgresql", "temporal", "api", "worker"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} needs a healthcheck"
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert services[target].get("healthcheck"), f"{name} waits for {target} to be healthy; it has no healthcheck"
            elif condition == "service_completed_successfully":
                assert target in JOBS, f"{name} waits for {target} to complete; it is not a one-shot job"
            else:
                pytest.fail(f"{name} → {target}: use a condition, not {condition}")
    for job in JOBS:
        assert services[job].get("restart") == "no", f"{job} is a one-shot job: restart: \"no\""
    # Acyclic, and the data layer comes first.
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...] = ()) -> None:
        assert name not in path, f"depends_on cycle: {' → '.join(path + (name,))}"
        if name in order:
            return
        for target in services[name].get("depends_on") or {}:
            visit(target, path + (name,))
        order.append(name)

    for name in services:
        visit(name)
    assert order.index("postgresql") < order.index("temporal-schema") < order.index("temporal")
    assert order.index("search-attributes") < order.index("worker")
    assert order.index("migrate") < order.index("api")


def test_worker_scales(rendered, raw):
    services = rendered["services"]
    assert not any("container_name" in s for s in services.values()), "container_name blocks --scale"
    worker = services["worker"]
    assert not worker.get("ports"), "a worker publishes no host port, so --scale worker=N works"
    assert "hostname" not in worker
    assert raw["services"]["worker"]["stop_grace_period"], "workers finish their activities on SIGTERM"
    for name in ("temporal", "temporal-ui"):  # no auth on these: not on every interface
        for port in services[name].get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond localhost"


def test_dockerfile_is_multistage_slim_non_root():
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(stages) >= 2, "multi-stage"
    for image, _stage in stages:
        assert "slim" in image, f"{image}: use a slim base"
    final = text[text.rindex("\nFROM "):]
    user = re.search(r"^USER\s+(\S+)", final, re.M)
    assert user and user.group(1).split(":")[0] not in ("root", "0"), "the runtime stage runs as a non-root user"
    assert "COPY --from=build" in final
    ignored = DOCKERIGNORE.read_text().split()
    for entry in (".git", ".venv", "tests", "data"):
        assert entry in ignored, f".dockerignore should exclude {entry}"
    for copied in re.findall(r"^COPY\s+(?!--)(\S+)", text, re.M):
        assert (REPO_ROOT / copied).exists(), f"the Dockerfile copies {copied}, which does not exist"
