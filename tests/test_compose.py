"""docker-compose.yml parses, has what distributed mode needs, and runs the commands the README documents."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
README = (ROOT / "README.md").read_text()


def test_services_exist_with_healthchecks_and_durable_redis():
    services = COMPOSE["services"]
    assert {"redis", "postgres", "worker-gpu", "worker-cpu", "producer"} <= services.keys()
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--maxmemory-policy noeviction" in redis_cmd
    for name in ("redis", "postgres"):
        assert services[name]["healthcheck"]["test"]
    assert any("/var/lib/postgresql/data" in v for v in services["postgres"]["volumes"])


def test_gpu_worker_reserves_a_gpu_waits_for_healthy_services_and_stops_gracefully():
    gpu = COMPOSE["services"]["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    for dep in ("redis", "postgres"):
        assert gpu["depends_on"][dep]["condition"] == "service_healthy"
    minutes = int(gpu["stop_grace_period"].rstrip("m"))
    assert minutes >= 1
    assert COMPOSE["services"]["worker-cpu"]["profiles"] == ["cpu"]
    assert COMPOSE["services"]["producer"]["profiles"] == ["producer"]


def test_every_service_command_is_documented_in_the_readme():
    for name, service in COMPOSE["services"].items():
        if "command" not in service or not service["command"][0] == "docqa":
            continue
        command = shlex.join(service["command"])
        assert command in README, f"{name}: {command!r} is not in README.md"


def test_service_commands_parse_with_the_real_cli():
    from docqa.cli import build_parser

    parser = build_parser()
    for service in COMPOSE["services"].values():
        cmd = service.get("command")
        if cmd and cmd[0] == "docqa":
            args = parser.parse_args(cmd[1:])
            assert args.func is not None


def test_compose_environment_points_workers_at_the_services():
    env = COMPOSE["x-docqa-env"]
    assert env["DOCQA_DATABASE_URL"].startswith("postgresql+psycopg://") and "@postgres:5432/" in env["DOCQA_DATABASE_URL"]
    assert env["DOCQA_BROKER_URL"] == "redis://redis:6379/0"


def test_workers_have_a_liveness_probe_that_parses_with_the_real_cli():
    from docqa.cli import build_parser

    parser = build_parser()
    for name in ("worker-gpu", "worker-cpu"):
        test = COMPOSE["services"][name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "docqa", "health"], name
        args = parser.parse_args(test[2:])
        assert args.worker and args.func.__name__ == "cmd_health"
