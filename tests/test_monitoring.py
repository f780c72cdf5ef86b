"""The monitoring profile: Prometheus scrapes the workers' metrics port, Grafana gets the docqa
dashboard, and every query of the dashboard asks for metrics a worker really exports
(tests/integration/test_metrics.py checks that a real worker exports all of them)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from docqa.worker import metrics

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
MONITORING = ROOT / "monitoring"
PROMETHEUS = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
DASHBOARD = json.loads((MONITORING / "grafana" / "dashboards" / "docqa.json").read_text())
DATASOURCES = yaml.safe_load((MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
PROVIDERS = yaml.safe_load((MONITORING / "grafana" / "provisioning" / "dashboards" / "docqa.yml").read_text())
WORKERS = [name for name, s in COMPOSE["services"].items() if (s.get("command") or [None, None])[:2] == ["docqa", "worker"]]


def exprs() -> list[str]:
    return [t["expr"] for p in DASHBOARD["panels"] for t in p.get("targets", [])]


def mounts(service: str) -> dict[str, str]:
    """{container path: host path} of a service's bind mounts, the ':ro' dropped."""
    out = {}
    for volume in COMPOSE["services"][service].get("volumes", []):
        if isinstance(volume, str) and volume.startswith("./"):
            host, container = volume.split(":")[:2]
            out[container] = host
    return out


def test_the_monitoring_profile_starts_prometheus_and_grafana_with_the_repository_config():
    services = COMPOSE["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], name
        for port in services[name]["ports"]:
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for host in mounts(name).values():
            assert (ROOT / host).exists(), f"{name} mounts {host}, which is not in the repository"
    assert mounts("prometheus")["/etc/prometheus/prometheus.yml"] == "./monitoring/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    grafana = mounts("grafana")
    assert grafana["/etc/grafana/provisioning"] == "./monitoring/grafana/provisioning"
    # The dashboard provider reads the folder the dashboards are mounted at.
    (provider,) = PROVIDERS["providers"]
    assert grafana[provider["options"]["path"]] == "./monitoring/grafana/dashboards"
    assert "prometheus" in services["grafana"]["depends_on"]
    # Every worker service is a docqa worker, and none is left out of the profile's view.
    assert WORKERS and set(WORKERS) >= {"worker-cpu", "worker-gpu"}
    assert "prometheus-data" in COMPOSE["volumes"]


def test_workers_serve_metrics_and_prometheus_scrapes_that_port_of_every_worker_service():
    from docqa.cli import build_parser

    port = int(COMPOSE["x-docqa-env"]["DOCQA_METRICS_PORT"])
    parser = build_parser()
    for name in WORKERS:
        env = COMPOSE["services"][name]["environment"]
        assert int(env["DOCQA_METRICS_PORT"]) == port, name  # through the shared docqa environment
        args = parser.parse_args(COMPOSE["services"][name]["command"][1:])
        assert args.func.__name__ == "cmd_worker"
    (job,) = PROMETHEUS["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    assert sd["port"] == port and sd["type"] == "A"
    assert set(sd["names"]) == set(WORKERS)
    # The dashboard's "Workers up" panel asks for this job.
    assert any(f'job="{job["job_name"]}"' in e for e in exprs())


def test_every_dashboard_query_uses_metrics_the_workers_export():
    exported = metrics.exported_series()
    scrape_job = PROMETHEUS["scrape_configs"][0]["job_name"]
    used = set()
    for expr in exprs():
        names = set(re.findall(r"\bdocqa_[a-z0-9_]+\b", expr))
        assert names or f'up{{job="{scrape_job}"}}' in expr, f"a panel queries no docqa metric: {expr}"
        unknown = names - exported
        assert not unknown, f"{expr!r} asks for {sorted(unknown)}, which no worker exports"
        used |= names
    # The views the dashboard exists for.
    for needed in ("docqa_windows_total", "docqa_store_jobs", "docqa_job_seconds_bucket", "docqa_jobs_total",
                   "docqa_model_info"):
        assert needed in used, needed
    assert any("by (instance)" in e and "docqa_windows_total" in e for e in exprs()), "no per-worker rate"


def test_the_dashboard_is_grafana_json_on_the_provisioned_datasource():
    (source,) = DATASOURCES["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert DASHBOARD["uid"] and DASHBOARD["title"] and DASHBOARD["schemaVersion"] >= 30
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for p in DASHBOARD["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": source["uid"]}, p["title"]
        assert {"x", "y", "w", "h"} <= p["gridPos"].keys() and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Prometheus) is not installed")
def test_prometheus_accepts_the_config_and_every_dashboard_query(tmp_path):
    check = subprocess.run(["promtool", "check", "config", "--syntax-only", str(MONITORING / "prometheus.yml")],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    # PromQL syntax: each query as a recording rule ($__rate_interval is Grafana's; any range does).
    rules = [{"record": f"docqa:query{i}", "expr": e.replace("$__rate_interval", "1m")} for i, e in enumerate(exprs())]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
