"""Where the test suite's time goes: seconds per tier and per file from a JUnit XML report.

    .venv/bin/python -m pytest --junitxml=/tmp/junit.xml
    python scripts/test_times.py /tmp/junit.xml        # tiers, then files, slowest first

Each test's time is its setup, call and teardown (pytest's JUnit ``time``); the tier is the
``tier`` property that ``tests/conftest.py`` records (fast, model or slow). With two workers
the sums exceed the wall time: the report gives both.
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from collections import defaultdict


def rows(path: str) -> list[tuple[str, str, float]]:
    """(file, tier, seconds) for every test case of the report."""
    out = []
    for case in ET.parse(path).getroot().iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        file = case.get("classname", "").split(".")[1] if "." in case.get("classname", "") else "?"
        out.append((f"{file}.py", props.get("tier", "?"), float(case.get("time", 0.0))))
    return out


def table(title: str, totals: dict[str, float], counts: dict[str, int]) -> str:
    lines = [f"| {title} | tests | seconds |", "|---|---:|---:|"]
    for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {counts[name]} | {seconds:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("junit", help="a report written by pytest --junitxml")
    report = rows(parser.parse_args().junit)
    for key, title in ((1, "tier"), (0, "file")):
        totals: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for row in report:
            totals[row[key]] += row[2]
            counts[row[key]] += 1
        print(table(title, totals, counts), end="\n\n")
    suite = ET.parse(parser.parse_args().junit).getroot().find("testsuite")
    wall = float(suite.get("time", 0.0)) if suite is not None else 0.0
    print(f"{len(report)} tests, {sum(r[2] for r in report):.0f} s summed, {wall:.0f} s wall")


if __name__ == "__main__":
    main()
