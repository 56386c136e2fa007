"""contrib/prometheus: the scrape config and the alert rules are valid for Prometheus, behave as
their tests say (promtool, where installed), and use only metrics and labels the recorder's
/metrics serves."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kline_tui.recorder.hub import StreamStatus
from kline_tui.retry import Backoff
from kline_tui.runtime import Runtime
from kline_tui.service.metrics import Metrics

from .support import WATCH, make_settings, wait_until

CONTRIB = Path(__file__).resolve().parent.parent / "contrib" / "prometheus"
ALERTS = CONTRIB / "alerts.yml"


def rule_lines() -> list[str]:
    """alerts.yml without its comments (which name a metric left out on purpose)."""
    return [line for line in ALERTS.read_text().splitlines() if not line.lstrip().startswith("#")]


def promtool(*args: str) -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    done = subprocess.run(
        [tool, *args], cwd=CONTRIB, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_accepts_the_scrape_config_and_the_rules():
    out = promtool("check", "config", "prometheus.yml")
    assert "SUCCESS: 9 rules found" in out  # the config loads alerts.yml, every rule of it


def test_the_alert_rules_pass_their_tests():
    promtool("test", "rules", "alerts_test.yml")


def test_the_rules_match_the_scrape_configs_job_names():
    jobs = re.findall(
        r"^\s*#?\s*- job_name:\s*(\S+)", (CONTRIB / "prometheus.yml").read_text(), re.M
    )
    assert jobs
    pattern = re.search(r'up\{job=~"([^"]+)"\}', "\n".join(rule_lines()))
    assert pattern is not None
    assert all(re.fullmatch(pattern.group(1), job) for job in jobs), jobs


async def test_every_metric_and_label_the_rules_use_is_served(sim, tmp_path):
    settings = make_settings(sim, tmp_path, WATCH, history=5)
    runtime = Runtime(settings, keep_closed=0, backoff=Backoff(base=0.2, cap=1.0))
    metrics = Metrics(runtime)
    await runtime.start()
    try:
        # Event lag is served for markets with a live connection that has had an event.
        def lag_everywhere() -> bool:
            text = metrics.render(None)[0].decode()
            return text.count("kline_tui_event_lag_seconds{") == len(WATCH)

        await wait_until(lag_everywhere, timeout=30, what="live connections on every market")
        body, _ = metrics.render(None)
    finally:
        runtime.request_stop("test over")
        await runtime.stop()
    labels: dict[str, set[str]] = {}
    values: dict[tuple[str, str], set[str]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
            for label, value in sample.labels.items():
                values.setdefault((sample.name, label), set()).add(value)

    rules = "\n".join(rule_lines())
    used = set(re.findall(r"\bkline_tui_[a-z_]+\b", rules))
    assert len(used) >= 8
    assert used <= set(labels), f"not served: {sorted(used - set(labels))}"

    # Selectors: each label a rule selects on is served, with the values it names.
    for name, selector in re.findall(r"\b(kline_tui_[a-z_]+)\{([^}]*)\}", rules):
        for label, _, wanted in re.findall(r'(\w+)\s*(=~|=)\s*"([^"]*)"', selector):
            assert label in labels[name], (name, label)
            for value in wanted.split("|"):
                assert value in values[name, label], (name, label, value)
    assert {s.value for s in StreamStatus} <= values["kline_tui_streams", "state"]

    # Annotations of an alert whose expression is on a per-market metric name the market.
    for block in rules.split("- alert: ")[1:]:
        if "$labels.market" in block:
            names = re.findall(r"\bkline_tui_[a-z_]+\b", block.split("annotations:")[0])
            assert names and all("market" in labels[n] for n in names), block.splitlines()[0]
