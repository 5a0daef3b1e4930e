"""Failures: exceptions raised in func propagate unchanged (forward and backward), PETSc's
divergence and max_num_steps raise SolverError (max_num_steps also as torchdiffeq's
AssertionError), and a solver stays usable after a failure."""
import pytest
import torch
from torch import nn

import pnode
from helpers import T01, decay


class Boom(Exception):
    pass


def test_exception_in_func_propagates_unchanged():
    def bad(t, y):
        if t > 0.5:
            raise Boom("inside func")
        return -y
    with pytest.raises(Boom, match="inside func"):
        pnode.odeint(bad, torch.ones(3, dtype=torch.float64), T01)


def test_exception_in_backward_propagates_unchanged():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3, dtype=torch.float64))

        def forward(self, t, y):
            if torch.is_grad_enabled() and y.requires_grad:
                raise Boom("in backward")
            return -self.w * y
    # store-all: the forward evaluates without a graph (the default keeps the graphs it builds)
    ys = pnode.odeint(M(), torch.ones(3, dtype=torch.float64), T01, checkpoint="all")
    with pytest.raises(Boom, match="in backward"):
        ys.sum().backward()


def test_blow_up_raises_solver_error():
    y0 = torch.full((3,), 10.0, dtype=torch.float64)
    with pytest.raises(pnode.SolverError) as info:
        pnode.odeint(lambda t, y: y ** 2, y0, T01)
    assert info.value.reason == "NAN" and 0 < info.value.time < 1 and info.value.steps > 0
    with pytest.raises(pnode.SolverError, match="not finite") as info:
        pnode.odeint(lambda t, y: y ** 2, y0, T01, method="rk4", options={"step_size": 0.1})
    assert info.value.reason == "NAN"


def test_max_num_steps_raises_solver_error():
    with pytest.raises(pnode.SolverError, match=r"max_num_steps exceeded \(3>=3\)") as info:
        pnode.odeint(decay, torch.ones(2, dtype=torch.float64), T01, options={"max_num_steps": 3})
    assert info.value.steps == 3 and info.value.time < 1.0 and info.value.reason == "MAX_STEPS"


def _stiff(t, y):
    return -1000.0 * (y - torch.cos(t))


@pytest.mark.parametrize("event", [False, True])
def test_max_num_steps_is_torchdiffeqs_assertion(event):
    """Programs written for torchdiffeq catch its ``AssertionError('max_num_steps exceeded
    (n>=n)')`` by type and message prefix (augmented-neural-odes' image experiments do, to
    end a run): pnode's error is caught the same way, for solves and for events; where
    torchdiffeq is installed, its own error is checked to be caught by the same test."""
    y0, t = torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 10.0], dtype=torch.float64)
    kw = dict(rtol=1e-8, atol=1e-8, method="dopri5", options={"max_num_steps": 10})

    def caught(mod):
        try:
            if event:  # the crossing at y = -2 never comes
                mod.odeint_event(_stiff, y0, t[0], event_fn=lambda t, y: y.sum() + 2.0, **kw)
            else:
                mod.odeint(_stiff, y0, t, **kw)
        except AssertionError as e:
            return e.args[0]
        return None

    message = caught(pnode)
    assert message is not None and message.startswith("max_num_steps exceeded (10>=10)")
    try:
        import torchdiffeq
    except ImportError:
        return
    assert caught(torchdiffeq).startswith("max_num_steps exceeded (10>=10)")


def test_solver_is_usable_after_a_failed_solve():
    with pnode.ODESolver(lambda t, y: y ** 2) as s:
        with pytest.raises(pnode.SolverError):
            s(torch.full((3,), 10.0, dtype=torch.float64), T01)
        ys = s(torch.full((3,), 0.1, dtype=torch.float64), T01)
        assert abs(float(ys[-1, 0]) - 1 / 9) < 1e-6  # y' = y^2, y(0) = 0.1: y(1) = 1/9


@pytest.mark.parametrize("as_module", [True, False])
def test_dtype_mismatch_between_model_and_state_is_named(as_module):
    """A float32 model with a float64 y0 fails inside torch ("mat1 and mat2 must have the
    same dtype"); pnode says which dtypes disagree and how to make them agree, without
    the chain of tracebacks through its internals."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))  # float32
    func = (lambda t, y: net(y)) if not as_module else _Field(net)
    with pytest.raises(TypeError, match=r"parameters are torch\.float32 but the state \(y0\) is torch\.float64"
                                        r".*y0\.to\(torch\.float32\), or func\.to\(torch\.float64\)") as info:
        pnode.odeint(func, torch.ones(3, 2, dtype=torch.float64), torch.tensor([0.0, 1.0]))
    assert info.value.__cause__ is None and info.value.__suppress_context__
    ys = pnode.odeint(func, torch.ones(3, 2), torch.tensor([0.0, 1.0]))  # agreeing dtypes solve
    assert ys.dtype == torch.float32 and torch.isfinite(ys).all()


class _Field(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, t, y):
        return self.net(y)
