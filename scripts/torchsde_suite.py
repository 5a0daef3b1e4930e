"""Run torchsde 0.2.6's own test suite against ``pnode.sde`` and report every outcome.

torchsde's ``tests/`` directory is not part of pnode: fetch it (``git clone
https://github.com/google-research/torchsde``) and point this script at it::

    .venv/bin/python scripts/torchsde_suite.py /path/to/torchsde/tests [--json out.json] [-k EXPR]
        [--timeout SECONDS] [--progress FILE]

Use the tests of the repository's head (commit eb3a00e): they are v0.2.6's with
``pytest.skip(msg=...)`` spelt ``pytest.skip(reason=...)``; under pytest >= 8 the tag's
spelling turns every CUDA skip into a ``TypeError``.

``import torchsde`` (and ``torchsde.settings``, ``torchsde.types``) is mapped to
``pnode.sde``; the suite then runs under pytest unchanged (it needs ``pytest`` and
``scipy``). Tests skipped for lack of CUDA are counted apart. The summary gives passes
per test file and the reason of each failure (the last line of its error); a test
running past ``--timeout`` seconds counts as a failure ("Timeout").
"""
import argparse
import collections
import json
import os
import signal
import sys


def _install_alias():
    import pnode.sde as sde
    import pnode.sde.settings
    import pnode.sde.types
    sys.modules["torchsde"] = sde
    sys.modules["torchsde.settings"] = pnode.sde.settings
    sys.modules["torchsde.types"] = pnode.sde.types
    return sde


class _Timeout(Exception):
    """A test ran past ``--timeout``."""


class _Alarm:
    """pytest plugin: fail a test that runs longer than ``seconds`` (SIGALRM; main thread)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def _ring(self, signum, frame):
        raise _Timeout(f"Timeout: over {self.seconds} s")

    def pytest_runtest_call(self, item):
        signal.signal(signal.SIGALRM, self._ring)
        signal.alarm(self.seconds)

    def pytest_runtest_teardown(self, item):
        signal.alarm(0)


class _Recorder:
    """pytest plugin: one record per test (call phase, or the setup phase that failed)."""

    def __init__(self, progress=None):
        self.records = []
        self.progress = progress

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and not report.passed):
            why = None
            if report.failed:
                text = str(report.longrepr).strip().splitlines()
                why = next((ln for ln in reversed(text) if ln.startswith("E ")), text[-1] if text else "")
                why = why[1:].strip() if why.startswith("E ") else why
            elif report.skipped:
                why = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else "skipped"
            self.records.append((report.nodeid, report.outcome, why))
            if self.progress:
                with open(self.progress, "a") as fh:
                    fh.write(f"{report.outcome} {report.duration:.2f}s {report.nodeid} {why or ''}\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tests", help="torchsde's tests/ directory")
    parser.add_argument("--json", help="write every test's outcome here")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression (a subset of the suite)")
    parser.add_argument("--progress", help="append each outcome to this file as it happens")
    parser.add_argument("--timeout", type=int, default=0,
                        help="fail a test running longer than this many seconds (0: no limit)")
    args = parser.parse_args(argv)
    import pytest
    sde = _install_alias()
    recorder = _Recorder(args.progress)
    pytest_args = [os.path.abspath(args.tests), "-q", "-p", "no:cacheprovider", "-W", "ignore",
                   "--no-header", "-rN", "--tb=short"]
    if args.keyword:
        pytest_args += ["-k", args.keyword]
    with open(os.devnull, "w") as devnull:
        stdout, sys.stdout = sys.stdout, devnull
        try:
            plugins = [recorder] + ([_Alarm(args.timeout)] if args.timeout > 0 else [])
            pytest.main(pytest_args, plugins=plugins)
        finally:
            sys.stdout = stdout
    by_file = collections.defaultdict(collections.Counter)
    for nodeid, outcome, why in recorder.records:
        cuda = outcome == "skipped" and "CUDA" in (why or "")
        by_file[nodeid.split("::")[0].rsplit("/", 1)[-1]]["cuda-skipped" if cuda else outcome] += 1
    total = collections.Counter()
    for c in by_file.values():
        total.update(c)
    cpu = total["passed"] + total["failed"] + total["skipped"]
    print(f"torchsde 0.2.6 suite against pnode.sde: {total['passed']}/{cpu} CPU tests pass "
          f"({100.0 * total['passed'] / max(cpu, 1):.1f}%), {total['failed']} fail, "
          f"{total['skipped']} skipped, {total['cuda-skipped']} CUDA-only skipped")
    for name, c in sorted(by_file.items()):
        n = c["passed"] + c["failed"] + c["skipped"]
        print(f"  {name:28s} {c['passed']:5d}/{n:<5d} pass, {c['failed']} fail")
    reasons = collections.Counter(why for _, outcome, why in recorder.records if outcome == "failed")
    for why, n in reasons.most_common():
        print(f"FAIL x{n}: {why}")
    for nodeid, outcome, why in recorder.records:
        if outcome == "failed":
            print(f"FAIL {nodeid}: {why}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([dict(test=t, outcome=o, why=w) for t, o, w in recorder.records], fh, indent=1)
    del sde
    return 0 if total["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
