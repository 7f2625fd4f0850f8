"""Per-module coverage from pytest-cov's ``coverage.json`` (written by ``make test``).

Prints the total and one row per module (statements, missed, % of lines covered), lowest first, and names the
modules under the threshold (80%) that docs/coverage.md gives no reason for (a list item starting with the
module's name in backquotes). ``--write`` also rewrites the
generated parts: README.md between ``<!-- coverage -->`` and ``<!-- /coverage -->`` (the figure) and
docs/coverage.md between ``<!-- table:coverage -->`` and ``<!-- /table:coverage -->`` (the list); the
reasons in docs/coverage.md are written by hand and left alone.

Usage: python benchmarks/coverage_table.py [coverage.json] [--write] [--check] [--threshold 80]
(``--check`` exits 1 when a module under the threshold has no reason in docs/coverage.md)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOC = ROOT / "docs" / "coverage.md"


@dataclass
class Row:
    module: str  # dotted name, e.g. oneshot.gallery.index
    statements: int
    missed: int
    percent: float


def module_name(path: str) -> str:
    """``src/oneshot/gallery/index.py`` (any prefix) -> ``oneshot.gallery.index``; packages keep their name."""
    parts = Path(path).with_suffix("").parts
    parts = parts[parts.index("oneshot") :] if "oneshot" in parts else parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def read_report(path: Path) -> tuple[float, int, list[Row]]:
    """(total % of lines, total statements, rows lowest coverage first) from a coverage.py JSON report."""
    report = json.loads(path.read_text())
    rows = [
        Row(module_name(f), s["num_statements"], s["missing_lines"], s["percent_covered"])
        for f, s in ((f, d["summary"]) for f, d in report["files"].items())
    ]
    rows.sort(key=lambda r: (r.percent, r.module))
    totals = report["totals"]
    return totals["percent_covered"], totals["num_statements"], rows


def table(rows: list[Row], threshold: float) -> str:
    lines = ["| module | statements | missed | covered |", "|---|---|---|---|"]
    for r in rows:
        mark = f" **(under {threshold:g}%)**" if r.percent < threshold else ""
        lines.append(f"| `{r.module}` | {r.statements} | {r.missed} | {r.percent:.0f}%{mark} |")
    return "\n".join(lines)


def replace_between(text: str, start: str, end: str, body: str) -> str:
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"markers {start} ... {end} not found")
    return pattern.sub(lambda _: f"{start}{body}{end}", text)


def unexplained(rows: list[Row], threshold: float, doc: str) -> list[str]:
    """Modules under ``threshold`` that no list item of ``doc`` starts with (``- `oneshot.x`: reason``)."""
    explained = set(re.findall(r"^- `([\w.]+)`", doc, re.M))
    return [r.module for r in rows if r.percent < threshold and r.module not in explained]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", nargs="?", type=Path, default=ROOT / "coverage.json")
    ap.add_argument("--threshold", type=float, default=80.0)
    ap.add_argument("--write", action="store_true", help="rewrite the README figure and the docs/coverage.md list")
    ap.add_argument("--check", action="store_true", help="exit 1 when a module under the threshold has no reason")
    args = ap.parse_args()
    if not args.report.is_file():
        raise SystemExit(f"{args.report} not found: run `make test` (pytest --cov-report=json:coverage.json) first")
    total, statements, rows = read_report(args.report)
    print(f"total: {total:.1f}% of {statements} statements in {len(rows)} modules")
    print(table(rows, args.threshold))
    if args.write:
        figure = f"{total:.0f}% of lines ({statements} statements, `make test`)"
        README.write_text(replace_between(README.read_text(), "<!-- coverage -->", "<!-- /coverage -->", figure))
        body = f"\nTotal {total:.1f}% of {statements} statements.\n\n{table(rows, args.threshold)}\n"
        DOC.write_text(replace_between(DOC.read_text(), "<!-- table:coverage -->", "<!-- /table:coverage -->", body))
    missing = unexplained(rows, args.threshold, DOC.read_text() if DOC.is_file() else "")
    if missing:
        print(f"under {args.threshold:g}% with no reason in docs/coverage.md: {', '.join(missing)}")
    return 1 if args.check and missing else 0


if __name__ == "__main__":
    sys.exit(main())
