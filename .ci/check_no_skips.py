#!/usr/bin/env python3
"""Fail CI when the multi-process tests (tests/scale, marker `postgres`) did not really run.

    ./scripts/test -q -p no:cacheprovider --junitxml=.ci/junit.xml
    python3 .ci/check_no_skips.py .ci/junit.xml          # add --any to refuse every skip

With CI=true, tests/scale/conftest.py already fails (not skips) when PostgreSQL or Redis is
unreachable; this check also catches a skip from anywhere else, a `-m "not postgres"` or a
collection that found none of them.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

SCALE_PREFIX = "tests.scale."


def main(argv: list[str]) -> int:
    paths = [a for a in argv if not a.startswith("--")]
    refuse_any_skip = "--any" in argv
    if len(paths) != 1:
        print("usage: check_no_skips.py JUNIT_XML [--any]", file=sys.stderr)
        return 2
    cases = list(ET.parse(paths[0]).getroot().iter("testcase"))  # noqa: S314 (our own report)
    ran = skipped = 0
    problems: list[str] = []
    for case in cases:
        name = f"{case.get('classname')}::{case.get('name')}"
        is_scale = (case.get("classname") or "").startswith(SCALE_PREFIX)
        skip = case.find("skipped")
        if skip is not None:
            skipped += 1
            if is_scale or refuse_any_skip:
                problems.append(f"skipped: {name}: {skip.get('message', '')}")
        elif is_scale:
            ran += 1
    if ran == 0:
        problems.append("no test of tests/scale ran (PostgreSQL/Redis multi-process tests)")
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"check_no_skips: {ran} multi-process tests ran, {skipped} tests skipped in all")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
