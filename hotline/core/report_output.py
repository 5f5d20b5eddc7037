"""`hotline report`'s output: the same columns as a table for people, CSV for spreadsheets (a
header row, RFC 4180 quoting, numbers without units: the units are in the column names) and
JSON for programs (docs/reports.md, "Output"). Pure: text in, text out."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from datetime import tzinfo
from typing import Literal, get_args

from hotline.core import kpis
from hotline.core.records import PartnerResult

Format = Literal["table", "csv", "json"]
FORMATS: tuple[Format, ...] = get_args(Format)

# Decimals kept: seconds to the millisecond, ratios to a millionth, so floating-point sums
# added in another order print the same.
_SECONDS_DECIMALS = 3
_RATIO_DECIMALS = 6
_RATIOS = frozenset({"service_level", "service_level_excl_short_abandon", "occupancy"})
PARTNER_RESULTS: tuple[str, ...] = tuple(result.value for result in PartnerResult)


def _rounded(name: str, value: kpis.Value) -> kpis.Value:
    if isinstance(value, float):
        return round(value, _RATIO_DECIMALS if name in _RATIOS else _SECONDS_DECIMALS)
    return value


def reasons(rows: Sequence[kpis.Row]) -> list[str]:
    """Every pause reason in the report, sorted: one column each."""
    return sorted({reason for row in rows for reason in row.pause_by_reason_s})


def header(group: kpis.Group | None, pause_reasons: Sequence[str]) -> list[str]:
    return [
        "period_start",
        "period_end",
        *([group] if group is not None else []),
        *kpis.CALL_FIGURES,
        *(f"partner_{result}" for result in PARTNER_RESULTS),
        *kpis.TIME_FIGURES,
        *(f"pause_seconds:{reason}" for reason in pause_reasons),
    ]


def _cells(
    row: kpis.Row, group: kpis.Group | None, pause_reasons: Sequence[str], tz: tzinfo
) -> list[kpis.Value | str]:
    per_responder = group == "responder"
    return [
        row.start.astimezone(tz).isoformat(),
        row.end.astimezone(tz).isoformat(),
        *([row.group] if group is not None else []),
        *(_rounded(name, row.figures[name]) for name in kpis.CALL_FIGURES),
        *(None if per_responder else row.partner.get(result, 0) for result in PARTNER_RESULTS),
        *(_rounded(name, row.figures[name]) for name in kpis.TIME_FIGURES),
        *(
            None if group == "campaign" else _rounded("", row.pause_by_reason_s.get(reason, 0.0))
            for reason in pause_reasons
        ),
    ]


class _Lines:
    """A file-like list of written text, for the csv module."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)


def as_csv(rows: Sequence[kpis.Row], group: kpis.Group | None, tz: tzinfo) -> str:
    """RFC 4180: CRLF line ends, fields quoted when they hold a comma, quote or line break; an
    unknown figure (a ratio of nothing) is an empty field."""
    pause_reasons = reasons(rows)
    out = _Lines()
    writer = csv.writer(out, dialect="excel", lineterminator="\r\n")
    writer.writerow(header(group, pause_reasons))
    for row in rows:
        writer.writerow(["" if v is None else v for v in _cells(row, group, pause_reasons, tz)])
    return "".join(out.parts)


def as_json(
    rows: Sequence[kpis.Row],
    *,
    group: kpis.Group | None,
    by: kpis.By,
    start: str,
    end: str,
    tz: tzinfo,
) -> str:
    """One object: the query, then `rows` in period order, each with every figure (null when
    unknown), `partner` (rolled-over calls by partner result) and `pause_seconds_by_reason`."""
    out_rows = []
    for row in rows:
        item: dict[str, object] = {
            "period_start": row.start.astimezone(tz).isoformat(),
            "period_end": row.end.astimezone(tz).isoformat(),
        }
        if group is not None:
            item[group] = row.group
        item.update({name: _rounded(name, value) for name, value in row.figures.items()})
        item["partner"] = (
            None
            if group == "responder"
            else {result: row.partner.get(result, 0) for result in PARTNER_RESULTS}
        )
        item["pause_seconds_by_reason"] = (
            None
            if group == "campaign"
            else {k: _rounded("", v) for k, v in sorted(row.pause_by_reason_s.items())}
        )
        out_rows.append(item)
    document = {
        "from": start,
        "to": end,
        "by": by,
        "group": group,
        "timezone": str(tz),
        "rows": out_rows,
    }
    return json.dumps(document, ensure_ascii=False, allow_nan=False, indent=1)


def as_table(rows: Sequence[kpis.Row], group: kpis.Group | None, tz: tzinfo) -> str:
    """Aligned columns, one line per row; `-` for an unknown figure."""
    pause_reasons = reasons(rows)
    lines = [header(group, pause_reasons)]
    lines += [
        ["-" if v is None else str(v) for v in _cells(row, group, pause_reasons, tz)]
        for row in rows
    ]
    # A pause reason is free text from Asterisk: no control character reaches the terminal.
    lines = [
        ["".join(c if c.isprintable() else "?" for c in cell) for cell in line] for line in lines
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(
            cell.rjust(width) if n else cell.ljust(width)
            for n, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )
