import os
import sys

import pytest
import torch

# PETSc reads sys.argv when pnode is imported; pytest's own flags are not PETSc options.
sys.argv = sys.argv[:1]
# tests/ on sys.path: ``import helpers`` and ``import reference`` (the worker scripts run as
# subprocesses get it through PYTHONPATH, see helpers.subprocess_env).
sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(1)


@pytest.fixture
def float64_default():
    """float64 as torch's default dtype and torch.manual_seed(0) for one test (the SDE
    tests use it for every test: ``pytestmark = pytest.mark.usefixtures(...)``)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(old)
