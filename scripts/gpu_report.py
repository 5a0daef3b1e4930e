"""Writes the device check's report (scripts/gpu_check.sh): OUTDIR/report.md and report.json
from the pytest JUnit XML (tests.xml), the benchmark rows (bench.json) and versions.txt.

Usage: python scripts/gpu_report.py OUTDIR DEVICE TEST_RC BENCH_RC SECONDS
Exit status 0 when every test passed and, on ``cuda``, none was skipped.
"""
import json
import os
import sys
import xml.etree.ElementTree as ET


def read(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def test_results(path):
    """``[{name, outcome, seconds, message}]`` from a JUnit XML file (empty if absent)."""
    if not os.path.exists(path):
        return []
    rows = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome, message = ("skipped" if tag == "skipped" else "failed"), (el.get("message") or "")[:300]
        rows.append(dict(name=case.get("name"), outcome=outcome, seconds=float(case.get("time", 0)), message=message))
    return rows


def main(out, device, test_rc, bench_rc, seconds):
    tests = test_results(os.path.join(out, "tests.xml"))
    bench = json.loads(read(os.path.join(out, "bench.json"), "{}") or "{}")
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "skipped")}
    ok = test_rc == 0 and bool(tests) and counts["failed"] == 0 and not (device == "cuda" and counts["skipped"])
    report = dict(device=device, ok=ok, seconds=seconds, test_exit=test_rc, bench_exit=bench_rc, tests=counts,
                  test_cases=tests, versions=read(os.path.join(out, "versions.txt")).strip(),
                  gpu=read(os.path.join(out, "nvidia-smi.txt")).strip()[:2000], bench=bench)
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    lines = [f"# pnode device check ({device})", "",
             f"- result: **{'PASS' if ok else 'FAIL'}** in {seconds} s; tests: {counts['passed']} passed, "
             f"{counts['failed']} failed, {counts['skipped']} skipped (pytest exit {test_rc}); benchmark exit {bench_rc}",
             f"- versions: {report['versions']}"]
    if bench.get("info", {}).get("gpu"):
        lines.append(f"- GPU: {bench['info']['gpu']}")
    bad = [t for t in tests if t["outcome"] != "passed"]
    if bad:
        lines += ["", "## Tests not passed", "", "| test | outcome | message |", "|---|---|---|"]
        lines += [f"| {t['name']} | {t['outcome']} | {t['message'].replace('|', '/')} |" for t in bad]
    if bench.get("rows"):
        lines += ["", f"## Benchmark (wall-clock s per training step, median of up to "
                      f"{bench['info']['repeats']} after a warm-up; device {bench['info']['device']})", "",
                  "| model | configuration | median s | min-max s | loss | steps / NFE |", "|---|---|---:|---:|---:|---:|"]
        for r in bench["rows"]:
            extra = r.get("steps") if r.get("steps") is not None else r.get("nfe", "")
            lines.append(f"| {r['model']} | {r['config']} | {r['median_s']:.3f} | {r['min_s']:.3f}-{r['max_s']:.3f} "
                         f"| {r['loss']:.8g} | {extra} |")
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    out, device, test_rc, bench_rc, seconds = sys.argv[1:6]
    sys.exit(main(out, device, int(test_rc), int(bench_rc), int(seconds)))
