"""deploy/prometheus and deploy/grafana: promtool accepts the config and the alert rules pass their
unit tests; the dashboard and the rules read only metrics the service exports."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

pytestmark = pytest.mark.unit


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool missing: apt-get install prometheus (scripts/setup.sh does)")
    return path


def dashboard_exprs(deploy) -> list[str]:
    dash = json.loads((deploy.DEPLOY / "grafana" / "dashboards" / "radapt.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def alert_exprs(deploy) -> dict[str, str]:
    groups = yaml.safe_load((deploy.DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    return {r["alert"]: r["expr"] for g in groups for r in g["rules"]}


def test_promtool_accepts_the_config_and_its_rules(deploy):
    proc = subprocess.run([_promtool(), "check", "config", str(deploy.DEPLOY / "prometheus" / "prometheus.yml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(alert_exprs(deploy))} rules found" in proc.stdout + proc.stderr


def test_alert_rules_pass_their_unit_tests(deploy):
    proc = subprocess.run([_promtool(), "test", "rules", "alerts_test.yml"], cwd=deploy.DEPLOY / "prometheus",
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_dashboard_and_alerts_read_only_exported_metrics(deploy):
    exported = deploy.metric_sample_names()
    exprs = dashboard_exprs(deploy) + list(alert_exprs(deploy).values())
    used = set().union(*(deploy.referenced_metrics(e) for e in exprs))
    assert used and used <= exported, f"not exported by service/metrics.py: {used - exported}"
    # every metric family of the contract is on the dashboard
    families = deploy.metric_families()
    shown = {deploy.family_of(n, families) for e in dashboard_exprs(deploy) for n in deploy.referenced_metrics(e)}
    assert len(families) >= 12 and shown == set(families), f"no panel for {set(families) - shown}"


def test_dashboard_is_well_formed_grafana_json(deploy):
    dash = json.loads((deploy.DEPLOY / "grafana" / "dashboards" / "radapt.json").read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            used_vars = {v for v in variables if f"${v}" in target["expr"]}
            assert used_vars <= set(variables)
    assert len([p for p in dash["panels"] if p["type"] != "row"]) >= 12
