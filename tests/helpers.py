"""Shared test helpers: vector fields, error norms, resource counters, subprocess runners.

Importable as ``helpers`` from every test (conftest.py puts tests/ on sys.path) and from
the worker scripts run as subprocesses (tests/ is on their PYTHONPATH, see
``subprocess_env``).
"""
import torch


# ---------------------------------------------------------------- error norms
def rel_err(a, b):
    """max |a-b| / max |b| (scalar float)."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))
