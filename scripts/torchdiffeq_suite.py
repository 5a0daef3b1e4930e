"""Run torchdiffeq's own test suite against pnode and count the subtests per method.

torchdiffeq's ``tests/`` directory is not part of pnode: fetch it (``git clone
https://github.com/rtqichen/torchdiffeq``) and point this script at it::

    .venv/bin/python scripts/torchdiffeq_suite.py /path/to/torchdiffeq/tests [--json out.json]

``import torchdiffeq`` is mapped to pnode, and the suite's method lists are restricted to the
methods pnode offers (the others raise a clear ``ValueError``; ``--all-methods`` keeps them).
Every subtest is reported with its outcome; the summary counts passes per method.
"""
import argparse
import collections
import json
import os
import sys
import types
import unittest
import warnings


def _install_alias():
    import pnode
    alias = types.ModuleType("torchdiffeq")
    for name in ("odeint", "odeint_adjoint", "odeint_event"):
        if hasattr(pnode, name):
            setattr(alias, name, getattr(pnode, name))
    sys.modules["torchdiffeq"] = alias
    return pnode


def _restrict(problems, offered):
    for name in ("FIXED_EXPLICIT_METHODS", "FIXED_IMPLICIT_METHODS", "ADAMS_METHODS", "ADAPTIVE_METHODS",
                 "SCIPY_METHODS", "IMPLICIT_METHODS"):
        setattr(problems, name, tuple(m for m in getattr(problems, name) if m in offered))
    problems.FIXED_METHODS = problems.FIXED_EXPLICIT_METHODS + problems.FIXED_IMPLICIT_METHODS
    problems.METHODS = problems.FIXED_METHODS + problems.ADAPTIVE_METHODS + problems.SCIPY_METHODS


class _Result(unittest.TextTestResult):
    """Records every subtest (and every test without subtests) with its outcome."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records = []
        self._had_subtests = set()

    def addSubTest(self, test, subtest, outcome):
        super().addSubTest(test, subtest, outcome)
        self._had_subtests.add(test.id())
        params = dict(subtest.params)
        why = None if outcome is None else self._exc_info_to_string(outcome, test).strip().splitlines()[-1]
        self.records.append((test.id(), params, outcome is None, why))

    def addSuccess(self, test):
        super().addSuccess(test)
        if test.id() not in self._had_subtests:
            self.records.append((test.id(), {}, True, None))

    def _fail(self, test, err):
        if test.id() not in self._had_subtests:
            why = self._exc_info_to_string(err, test).strip().splitlines()[-1]
            self.records.append((test.id(), {}, False, why))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._fail(test, err)

    def addError(self, test, err):
        super().addError(test, err)
        self._fail(test, err)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tests", help="torchdiffeq's tests/ directory")
    parser.add_argument("--json", help="write every subtest's outcome here")
    parser.add_argument("--all-methods", action="store_true", help="keep the methods pnode does not offer")
    parser.add_argument("-k", "--modules", nargs="*", default=["api_tests", "event_tests", "gradient_tests",
                                                               "norm_tests", "odeint_tests"])
    args = parser.parse_args(argv)
    pnode = _install_alias()
    sys.path.insert(0, os.path.abspath(args.tests))
    import problems
    if not args.all_methods:
        _restrict(problems, set(pnode.METHODS))
    warnings.simplefilter("ignore")
    suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromName(m) for m in args.modules)
    runner = unittest.TextTestRunner(resultclass=_Result, verbosity=0, stream=open(os.devnull, "w"))
    result = runner.run(suite)
    by_method = collections.defaultdict(lambda: [0, 0])
    for test, params, ok, why in result.records:
        key = params.get("method") or params.get("solver") and "scipy_solver" or "(no method)"
        by_method[key][0] += ok
        by_method[key][1] += 1
    total = sum(n for _, n in by_method.values())
    passed = sum(p for p, _ in by_method.values())
    print(f"torchdiffeq suite against pnode {pnode.__version__}: {passed}/{total} subtests pass")
    for method, (p, n) in sorted(by_method.items()):
        print(f"  {method:18s} {p:4d}/{n:<4d} {100.0 * p / n:5.1f}%")
    failures = [(t, p, w) for t, p, ok, w in result.records if not ok]
    for test, params, why in failures:
        print(f"FAIL {test.split('.', 1)[-1]} {params}: {why}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([dict(test=t, params={k: str(v) for k, v in p.items()}, ok=ok, why=w)
                       for t, p, ok, w in result.records], fh, indent=1)
    return 0 if passed == total else 1


if __name__ == "__main__":
    sys.exit(main())
