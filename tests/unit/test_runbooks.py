"""Every alert in deploy/prometheus/alert-rules.yml has a `runbook_url` annotation that points at
its own section of docs/operations.md, and every link inside that document to one of its own
sections resolves. Anchors are computed the way the repository's Markdown is rendered: the
heading in lower case, punctuation dropped, spaces as hyphens, repeats numbered."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ALERT_RULES = REPO / "deploy" / "prometheus" / "alert-rules.yml"
OPERATIONS = REPO / "docs" / "operations.md"
RUNBOOK_PREFIX = "docs/operations.md#"


def anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def headings(markdown: str) -> dict[str, str]:
    """Anchor -> heading text, for every heading outside code blocks."""
    found: dict[str, str] = {}
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"^#{1,6} (.+?)\s*#*$", line)
        if fenced or match is None:
            continue
        base = anchor(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found[base if count == 0 else f"{base}-{count}"] = match.group(1)
    return found


def alerts() -> list[dict[str, object]]:
    document = yaml.safe_load(ALERT_RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def test_the_anchor_rule_matches_rendered_markdown() -> None:
    assert anchor("HotlineCallerWaitingTooLong") == "hotlinecallerwaitingtoolong"
    assert anchor("Back up and restore the records") == "back-up-and-restore-the-records"
    assert anchor("Rotate the AMI secret") == "rotate-the-ami-secret"
    assert anchor("Status and logs") == "status-and-logs"
    assert headings("# A\n```sh\n# not a heading\n```\n## A\n") == {"a": "A", "a-1": "A"}


def test_every_alert_has_a_runbook_url_to_its_own_section_of_the_operations_guide() -> None:
    sections = headings(OPERATIONS.read_text())
    rules = alerts()
    assert rules, f"no alerts found in {ALERT_RULES}"
    problems = []
    for rule in rules:
        name = rule["alert"]
        annotations = rule.get("annotations")
        url = annotations.get("runbook_url") if isinstance(annotations, dict) else None
        if not isinstance(url, str) or not url.startswith(RUNBOOK_PREFIX):
            problems.append(f"{name}: runbook_url is {url!r}, not {RUNBOOK_PREFIX}<anchor>")
            continue
        target = url.removeprefix(RUNBOOK_PREFIX)
        if target not in sections:
            problems.append(f"{name}: {url} names no heading of docs/operations.md")
        elif sections[target] != name:
            problems.append(f"{name}: {url} is the section {sections[target]!r}, not {name!r}")
    assert problems == []


def test_links_within_the_operations_guide_resolve() -> None:
    text = OPERATIONS.read_text()
    sections = headings(text)
    targets = re.findall(r"\]\(#([^)]+)\)", text)
    assert targets
    assert sorted({t for t in targets if t not in sections}) == []
