"""docker-compose.yml, the Dockerfile and .dockerignore, read as files (no Docker engine runs
here): profiles, healthchecks, secrets, the non-root image, and the commands the README documents."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
README = (ROOT / "README.md").read_text()
DOCKERFILE = (ROOT / "Dockerfile").read_text()
DOCQA_SERVICES = ("worker-cpu", "worker-gpu", "producer", "cli")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def strings(value) -> list[str]:
    """Every string inside a compose value (lists and mappings walked)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in strings(k) + strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def test_services_and_durable_stores():
    assert {"redis", "postgres", "worker-cpu", "worker-gpu", "producer", "cli", "flower"} <= SERVICES.keys()
    redis_cmd = " ".join(SERVICES["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--maxmemory-policy noeviction" in redis_cmd
    assert "redis-data:/data" in SERVICES["redis"]["volumes"]
    assert "postgres-data:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]
    assert {"redis-data", "postgres-data", "models"} <= COMPOSE["volumes"].keys()


def test_every_service_has_a_healthcheck():
    for name, service in SERVICES.items():
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_plain_up_needs_no_gpu_and_the_rest_is_behind_profiles():
    default = {name for name, s in SERVICES.items() if not s.get("profiles")}
    assert default == {"redis", "postgres", "worker-cpu"}, "what `docker compose up` starts"
    assert not any("deploy" in SERVICES[name] for name in default), "a default service reserves a device"
    assert SERVICES["worker-gpu"]["profiles"] == ["gpu"]
    assert SERVICES["producer"]["profiles"] == ["producer"]
    assert SERVICES["cli"]["profiles"] == ["tools"]
    assert SERVICES["flower"]["profiles"] == ["flower"]


def test_gpu_worker_reserves_a_gpu_waits_for_healthy_services_and_stops_gracefully():
    gpu = SERVICES["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    for name in DOCQA_SERVICES:
        for dep in ("redis", "postgres"):
            assert SERVICES[name]["depends_on"][dep]["condition"] == "service_healthy", name
    for name in ("worker-cpu", "worker-gpu"):
        assert int(SERVICES[name]["stop_grace_period"].rstrip("m")) >= 1


def test_every_service_command_is_documented_in_the_readme():
    for name, service in SERVICES.items():
        if "command" not in service or service["command"][0] not in ("docqa", "celery"):
            continue
        command = shlex.join(service["command"])
        assert command in README, f"{name}: {command!r} is not in README.md"


def test_the_commands_at_the_top_of_the_compose_file_are_in_the_readme():
    header = (ROOT / "docker-compose.yml").read_text().split("\nx-", 1)[0]
    commands = [line.lstrip("# ").split("  #")[0].strip() for line in header.splitlines()
                if re.match(r"#\s+(sh deploy|docker compose)", line)]
    assert len(commands) >= 6
    for command in commands:
        assert command in README, f"{command!r} is not in README.md"


def test_service_commands_and_probes_parse_with_the_real_cli():
    from docqa.cli import build_parser

    parser = build_parser()
    for name, service in SERVICES.items():
        cmd = service.get("command")
        if cmd and cmd[0] == "docqa":
            assert parser.parse_args(cmd[1:]).func is not None, name
        test = service["healthcheck"]["test"]
        if test[:2] == ["CMD", "docqa"]:
            assert parser.parse_args(test[2:]).func.__name__ == "cmd_health", name
    for name in ("worker-cpu", "worker-gpu"):
        command = SERVICES[name]["command"]
        assert parser.parse_args(command[1:]).events, f"{name}: Flower shows tasks only with --events"
        probe = parser.parse_args(SERVICES[name]["healthcheck"]["test"][2:])
        assert probe.worker, f"{name}: its probe must ask for a live worker of this host"


def test_docqa_services_read_their_urls_from_secret_files():
    declared = COMPOSE["secrets"]
    for name in (*DOCQA_SERVICES, "flower"):
        service = SERVICES[name]
        env = service["environment"]
        mounted = set(service["secrets"])
        assert "DOCQA_BROKER_URL" not in env and "DOCQA_DATABASE_URL" not in env, name
        assert env["DOCQA_BROKER_URL_FILE"] == "/run/secrets/broker_url", name
        wanted = {"broker_url", "tls_ca"} | ({"database_url"} if "DOCQA_DATABASE_URL_FILE" in env else set())
        assert wanted <= mounted, f"{name} mounts {mounted}"
        for var in ("DOCQA_BROKER_URL_FILE", "DOCQA_DATABASE_URL_FILE"):
            if var in env:
                assert env[var].removeprefix("/run/secrets/") in mounted, (name, var)
    for name, secret in declared.items():
        assert secret["file"].startswith("./secrets/"), name
    assert SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "POSTGRES_PASSWORD" not in SERVICES["postgres"]["environment"]
    assert {"redis_password", "tls_cert", "tls_key"} <= set(SERVICES["redis"]["secrets"])


def test_no_password_is_written_into_the_compose_file():
    url_with_password = re.compile(r"://[^/\s:@]*:[^@\s/]+@")
    for name, service in SERVICES.items():
        for text in strings({k: v for k, v in service.items() if k != "secrets"}):
            assert not url_with_password.search(text), f"{name}: a URL with a password: {text!r}"
            assert not re.search(r"--requirepass|\bredis-cli\b.*\s-a\s|PGPASSWORD=|\bpassword\s*[:=]\s*\w", text,
                                 re.IGNORECASE), f"{name}: {text!r}"
    redis = " ".join(SERVICES["redis"]["command"])
    assert "--port 0 --tls-port 6379" in redis and "/run/secrets/redis_password" in redis
    assert "REDISCLI_AUTH" in SERVICES["redis"]["healthcheck"]["test"][1]  # not `redis-cli -a PASSWORD`
    assert "ssl=on" in " ".join(SERVICES["postgres"]["command"])
    flower = SERVICES["flower"]
    assert flower["ports"] == ["127.0.0.1:5555:5555"], "Flower has no login: loopback only"
    grafana = SERVICES["grafana"]  # not the image's admin/admin
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert grafana["secrets"] == ["grafana_admin_password"] and "grafana_admin_password" in COMPOSE["secrets"]


def test_the_image_pins_torch_builds_cpu_and_gpu_variants_and_runs_as_a_user():
    assert re.search(r"^ARG TORCH_VERSION=2\.13\.0$", DOCKERFILE, re.MULTILINE)
    assert '"torch==${TORCH_VERSION}"' in DOCKERFILE and '--index-url "$TORCH_INDEX"' in DOCKERFILE
    assert SERVICES["worker-cpu"]["build"]["args"]["TORCH_INDEX"] == CPU_INDEX
    assert SERVICES["worker-cpu"]["image"] == "docqa:cpu"
    assert SERVICES["worker-gpu"]["build"] == "." and SERVICES["worker-gpu"]["image"] == "docqa:latest"
    for name in ("producer", "cli", "flower"):
        assert SERVICES[name]["image"] == "docqa:cpu", f"{name} needs no CUDA build of torch"
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    assert re.search(rf"useradd .*\b{re.escape(users[-1])}\b", DOCKERFILE)
    assert "chown docqa:docqa /models" in DOCKERFILE, "the model cache must be writable by the user"
    assert '".[flower]"' in DOCKERFILE


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether docker's build context leaves `path` out (the .dockerignore rules this file uses:
    no `!` exceptions; a pattern matches a path or any folder above it; `**/` any depth)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatchcase(prefix.split("/")[-1], pattern[3:])
            ):
                return True
    return False


def test_dockerignore_keeps_the_venv_git_stores_and_secrets_out_and_what_the_image_copies_in():
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    assert not any(p.startswith("!") for p in patterns)
    for path in (".venv/lib/python3.11/site-packages/torch/__init__.py", ".git/HEAD", "secrets/broker_url",
                 "docqa.db", "docqa.db-wal", "answers.db", "docqa/__pycache__/api.cpython-311.pyc",
                 "docqa.egg-info/PKG-INFO", ".pytest_cache/v", ".ruff_cache/x", "build/lib/x", "dist/docqa.whl",
                 "bench-out/run.json", ".env", "tests/fixtures/tiny-distilbert-qa/config.json"):
        assert _ignored(path, patterns), f"{path} would be sent to the docker build"
    copied = re.findall(r"^COPY\s+(.+?)\s+\S+$", DOCKERFILE, re.MULTILINE)
    sources = [s for line in copied for s in line.split()]
    assert {"pyproject.toml", "README.md", "docqa", "worker", "producer", "storage", "examples"} <= set(sources)
    for source in sources:
        assert not _ignored(source, patterns), f"the Dockerfile copies {source}, which .dockerignore leaves out"
    for path in ("docqa/cli/__init__.py", "storage/migrations/alembic.ini", "examples/documents/eiffel-tower.txt"):
        assert not _ignored(path, patterns), path
