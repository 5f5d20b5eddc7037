"""The Prometheus and Grafana side of hotline (deploy/prometheus, deploy/grafana): promtool accepts
the configuration and the rules, the rules' own unit tests pass, and every rule and dashboard
expression parses in a real Prometheus and names only metrics the daemon exports."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from hotline.config import parse_config
from hotline.core.privacy import load_keys
from hotline.daemon import Daemon, Secrets
from tests.harness import REPO, ManualClock
from tests.prom import (
    ALERT_RULES,
    DASHBOARD,
    PROMETHEUS_DIR,
    RECORDING_RULES,
    RULE_FILES,
    SCRAPE_CONFIG,
    Expression,
    PromError,
    Prometheus,
    PromQueryError,
    binary,
    dashboard_expressions,
    expressions,
    panels,
    substitute,
)

RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.test.yml"))

# What the daemon exports (docs/metrics.md, "Metric catalogue", as built). Histograms also expose
# _bucket, _sum and _count; counters are listed with their _total.
GAUGES = {
    "hotline_asterisk_start_timestamp_seconds",
    "hotline_asterisk_reload_timestamp_seconds",
    "hotline_asterisk_info",
    "hotline_ami_ping_rtt_seconds",
    "hotline_event_queue_depth",
    "hotline_queue_callers",
    "hotline_queue_longest_wait_seconds",
    "hotline_queue_members",
    "hotline_queue_members_logged_in",
    "hotline_queue_members_leaving",
    "hotline_queue_members_foreign",
    "hotline_shift_members_scheduled",
    "hotline_queue_membership_drift",
    "hotline_queue_info",
    "hotline_staffing_required_agents",
    "hotline_ami_up",
    "hotline_state_synced",
    "hotline_ami_last_message_timestamp_seconds",
    "hotline_calls_open",
    "hotline_db_up",
    "hotline_db_backlog_events",
    "hotline_db_backlog_age_seconds",
    "hotline_spool_bytes",
    "hotline_build_info",
    "hotline_http_connections",
    "hotline_http_connections_max",
    "hotline_partner_reachable",
    "hotline_pauses_over_limit",
    "hotline_phone_reachable",
    "hotline_phones_on_shift",
    "hotline_surge_active",
    "hotline_wellbeing_over_limit",
    "hotline_coverage_next_gap_seconds",
    "hotline_coverage_shortfall",
    "hotline_coverage_forecast_from_history",
    "hotline_certifications_lapsing",
}
COUNTERS = {
    "hotline_queue_calls_offered_total",
    "hotline_queue_calls_answered_total",
    "hotline_queue_calls_abandoned_total",
    "hotline_queue_calls_exited_total",
    "hotline_agent_ring_noanswer_total",
    "hotline_partner_calls_total",
    "hotline_ami_connect_attempts_total",
    "hotline_ami_disconnects_total",
    "hotline_ami_actions_total",
    "hotline_ami_actions_refused_total",
    "hotline_ami_malformed_messages_total",
    "hotline_reconcile_rounds_total",
    "hotline_reconcile_triggers_total",
    "hotline_event_handler_errors_total",
    "hotline_events_received_total",
    "hotline_events_dropped_total",
    "hotline_events_unattributed_total",
    "hotline_db_write_errors_total",
    "hotline_db_rows_written_total",
    "hotline_db_duplicates_total",
    "hotline_records_dead_lettered_total",
    "hotline_event_queue_overflows_total",
    "hotline_config_reloads_total",
    "hotline_watchdog_notifications_total",
    "hotline_http_connections_shed_total",
    "hotline_http_accept_errors_total",
    "hotline_api_auth_refused_total",
    "hotline_pauses_lifted_total",
    "hotline_phone_refused_calls_total",
    "hotline_surge_activations_total",
    "hotline_surge_releases_total",
    "hotline_surge_audit_failures_total",
    "hotline_wellbeing_pauses_total",
    "hotline_wellbeing_limits_reached_total",
    "hotline_wellbeing_hard_calls_flagged_total",
    "hotline_wellbeing_failures_total",
}
HISTOGRAMS = {
    "hotline_queue_wait_seconds",
    "hotline_call_talk_seconds",
    "hotline_ami_action_duration_seconds",
    "hotline_reconcile_round_duration_seconds",
    "hotline_event_lag_seconds",
    "hotline_event_loop_lag_seconds",
    "hotline_event_processing_seconds",
    "hotline_db_write_duration_seconds",
}
EXPORTED = (
    GAUGES
    | COUNTERS
    | {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
)

# docs/metrics.md, "Alerts".
DOCUMENTED_ALERTS = {
    "HotlineAsteriskRestarted",
    "HotlineCallerWaitingTooLong",
    "HotlineCallersWaitingNobodyAvailable",
    "HotlineUnderstaffed",
    "HotlineNobodyReachable",
    "HotlinePauseOverLimit",
    "HotlineSurgeActive",
    "HotlineResponderOverWellbeingLimit",
    "HotlineCoverageGapAhead",
    "HotlineServiceLevelLow",
    "HotlineAbandonRateHigh",
    "HotlineRolloverHigh",
    "HotlinePartnerCallsFailing",
    "HotlinePartnerUnreachable",
    "HotlinePhoneRefusesCalls",
    "HotlineBlind",
    "HotlineAMISilent",
    "HotlineEventLagHigh",
    "HotlineDBBacklog",
    "HotlineRecordsDropped",
    "HotlineRecordsDeadLettered",
    "HotlineMembershipDrift",
    "HotlineEventHandlerErrors",
    "HotlineDaemonFlapping",
    "HotlineTargetDown",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary("promtool")), *args], capture_output=True, text=True, timeout=120, check=False
    )


def rules_of(path: Path) -> list[dict[str, Any]]:
    content = yaml.safe_load(path.read_text())
    return [rule for group in content["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def content_panels() -> list[dict[str, Any]]:
    return [p for p in panels(dashboard()) if p.get("type") != "row"]


@pytest.fixture(scope="module")
def prometheus() -> Iterator[Prometheus]:
    """One Prometheus for the module, with an empty TSDB and both rule files loaded. Never
    skipped: if it cannot start, the tests that need it fail and say why."""
    try:
        prom = Prometheus(target=None)
        prom.start()
    except PromError as exc:
        pytest.fail(f"Prometheus could not start: {exc}", pytrace=False)
    yield prom
    prom.stop()


# -- promtool -------------------------------------------------------------------------------


def test_promtool_accepts_the_example_scrape_config_and_the_rule_files_it_names() -> None:
    # rule_files are relative to the config file: promtool resolves them from its directory.
    result = promtool("check", "config", str(SCRAPE_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout


def test_the_example_scrape_config_scrapes_job_hotline_every_five_seconds() -> None:
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "hotline"]
    assert job["scrape_interval"] == "5s"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9470"]}]
    assert sorted(config["rule_files"]) == sorted(p.name for p in RULE_FILES)


def test_promtool_accepts_both_rule_files() -> None:
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda p: p.name)
def test_the_rules_pass_their_promtool_unit_tests(test_file: Path) -> None:
    result = promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_there_are_promtool_unit_tests_for_both_rule_files() -> None:
    assert {p.name for p in RULE_TESTS} == {"alert-rules.test.yml", "recording-rules.test.yml"}


# -- what the daemon exports ------------------------------------------------------------------


async def test_the_daemon_exports_exactly_the_families_listed_here_and_documented(
    tmp_path: Path,
) -> None:
    """A daemon with call recording on, built but not run (no PBX, no Postgres): the families
    of its exposition are the list above, and those docs/metrics.md's catalogue names."""
    keys = tmp_path / "caller-keys"
    keys.write_text(f"1:{secrets.token_hex(32)}\n")
    keys.chmod(0o600)
    config = parse_config(
        "ami: {host: 127.0.0.1, port: 5038, username: hotline, secret_env: UNUSED}\n"
        f"database: {{dsn: 'postgresql://hotline@127.0.0.1/hotline', spool_dir: {tmp_path}/s}}\n"
        f"privacy: {{keys_file: {keys}}}\n"
        "timezone: UTC\nqueues: {crisis: {}}\nresponders: {}\n",
        tmp_path / "hotline.yaml",
    )
    unused = Secrets("unused", load_keys(keys.read_text()), "postgresql://hotline@127.0.0.1/x")
    daemon = Daemon(config, unused, ManualClock(datetime.now(UTC)), CollectorRegistry())
    families = dict(re.findall(r"^# TYPE (hotline_\w+) (\w+)$", daemon.exposition().decode(), re.M))
    exported = {
        f"{name}{suffix}"
        for name, kind in families.items()
        for suffix in (("_bucket", "_sum", "_count") if kind == "histogram" else ("",))
    }
    assert exported == EXPORTED, f"unlisted: {exported - EXPORTED}, gone: {EXPORTED - exported}"
    text = (REPO / "docs" / "metrics.md").read_text()
    catalogue = text[text.index("## Metric catalogue") : text.index("## Service level")]
    assert set(re.findall(r"\bhotline_\w*[a-z]", catalogue)) == set(families)


# -- the rules themselves -----------------------------------------------------------------


def test_every_documented_alert_is_defined_once() -> None:
    names = [rule["alert"] for rule in rules_of(ALERT_RULES)]
    assert len(names) == len(set(names))
    assert set(names) == DOCUMENTED_ALERTS


@pytest.mark.parametrize("rule", rules_of(ALERT_RULES), ids=lambda r: str(r["alert"]))
def test_every_alert_has_a_severity_a_summary_and_a_description(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"page", "warn"}
    assert rule["annotations"]["summary"].strip()
    assert len(rule["annotations"]["description"].split()) >= 15, "say what to check first"


def test_callers_waiting_with_nobody_available_pages_after_fifteen_seconds() -> None:
    (rule,) = [
        r for r in rules_of(ALERT_RULES) if r["alert"] == "HotlineCallersWaitingNobodyAvailable"
    ]
    assert rule["for"] == "15s"
    assert rule["labels"]["severity"] == "page"


def test_every_recording_rule_has_a_comment_line_above_it() -> None:
    lines = RECORDING_RULES.read_text().splitlines()
    for number, line in enumerate(lines):
        if line.strip().startswith("- record:"):
            above = next(previous for previous in reversed(lines[:number]) if previous.strip())
            assert above.strip().startswith("#"), f"line {number + 1}: {line.strip()}"


# -- the dashboard ----------------------------------------------------------------------------


def test_every_dashboard_panel_has_a_target_with_an_expression() -> None:
    found = content_panels()
    assert found
    for panel in found:
        assert panel.get("targets"), f"panel {panel.get('title')!r} has no target"
        for target in panel["targets"]:
            assert str(target.get("expr", "")).strip(), f"panel {panel.get('title')!r}"


def test_every_dashboard_panel_queries_the_datasource_variable() -> None:
    for panel in content_panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"]) == panel["datasource"]


def test_the_dashboard_has_a_datasource_and_a_queue_variable() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    queue = variables["queue"]
    assert queue["query"]["query"] == "label_values(hotline_queue_callers, queue)"
    assert queue["includeAll"]
    assert queue["multi"]


def test_the_dashboard_rows_follow_the_documented_layout() -> None:
    rows = [p["title"] for p in dashboard()["panels"] if p["type"] == "row"]
    assert rows == ["Now", "Flow", "Distributions", "Plumbing"]
    titles = {p["title"]: p for p in content_panels()}
    banner = titles["Queue visibility"]
    assert banner["gridPos"]["w"] == 24
    assert "hotline_ami_up" in banner["targets"][0]["expr"]
    assert "hotline_state_synced" in banner["targets"][0]["expr"]
    heatmaps = [p for p in content_panels() if p["type"] == "heatmap"]
    assert {t["format"] for p in heatmaps for t in p["targets"]} == {"heatmap"}
    assert len(heatmaps) == 2


def test_no_two_dashboard_panels_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard()):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = panel["title"]


def test_the_dashboard_template_variables_are_filled_in_for_checking() -> None:
    assert (
        substitute('rate(x{queue=~"$queue"}[$__rate_interval]) + y{q="${queue:regex}"}[$__range]')
        == 'rate(x{queue=~".*"}[1m]) + y{q=".*"}[1h]'
    )
    with pytest.raises(PromError, match="unknown template variable"):
        substitute("x[$nonesuch]")
    assert all("$" not in e.expr for e in dashboard_expressions())


# -- every expression, in a real Prometheus ----------------------------------------------------


@pytest.mark.parametrize("expression", expressions(), ids=str)
def test_every_expression_names_only_exported_metrics_or_recorded_rules(
    expression: Expression,
) -> None:
    recorded = {rule["record"] for rule in rules_of(RECORDING_RULES)}
    names = set(re.findall(r"\bhotline[_:][A-Za-z0-9_:]*", expression.expr))
    assert names <= EXPORTED | recorded, f"unknown: {sorted(names - EXPORTED - recorded)}"


@pytest.mark.parametrize("expression", expressions(), ids=str)
async def test_every_rule_and_dashboard_expression_parses_in_a_real_prometheus(
    prometheus: Prometheus, expression: Expression
) -> None:
    # An empty TSDB: the query returns nothing, but a parse error is HTTP 400 bad_data.
    await prometheus.query(expression.expr)


async def test_a_broken_expression_is_refused_with_prometheus_s_parse_error(
    prometheus: Prometheus,
) -> None:
    with pytest.raises(PromQueryError, match="parse error") as refused:
        await prometheus.query("sum by (queue) (rate(hotline_queue_callers[5m])")
    assert refused.value.error_type == "bad_data"


async def test_every_rule_loads_and_evaluates_without_error_in_a_real_prometheus(
    prometheus: Prometheus,
) -> None:
    rules = await prometheus.wait_for_rules_evaluated(within=30)
    assert {r["name"] for r in rules} == {
        *(rule["record"] for rule in rules_of(RECORDING_RULES)),
        *(rule["alert"] for rule in rules_of(ALERT_RULES)),
    }
    assert [(r["name"], r["lastError"]) for r in rules if r["health"] != "ok"] == []
    # An empty TSDB: only the "no hotline target at all" alert can be pending.
    assert {a["labels"]["alertname"] for a in await prometheus.alerts()} <= {"HotlineTargetDown"}
