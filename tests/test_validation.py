"""Argument validation: bad t, methods, options, dtype, tolerances, checkpoint arguments,
the shape of func's output, and the torchdiffeq adjoint keywords (accepted with a warning)."""
import pytest
import torch

import pnode
from helpers import T01, decay


@pytest.mark.parametrize("t, match", [
    (torch.tensor([[0.0, 1.0]]), "t must be a 1-D"),
    (torch.tensor([0.0, 1.0, 0.5]), "strictly increasing or strictly decreasing"),
    (torch.tensor([0.0, 0.0]), "strictly"),
    (torch.tensor([0.0, float("nan")]), "finite"),
])
def test_bad_t(t, match):
    with pytest.raises(ValueError, match=match):
        pnode.odeint(decay, torch.ones(2, dtype=torch.float64), t)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown method 'rk45'.*dopri5.*rk4"):
        pnode.odeint(decay, torch.ones(2, dtype=torch.float64), T01, method="rk45")


@pytest.mark.parametrize("opts, match", [
    ({"step_size": 0.0}, r"options\['step_size'\] must be a positive"),
    ({"step_size": -0.1}, r"options\['step_size'\] must be a positive"),
    ({"max_num_steps": 0}, r"options\['max_num_steps'\]"),
    ({"stepsize": 0.1}, "unknown options"),
    ({"theta": 0.3}, "needs an implicit method"),
])
def test_bad_options(opts, match):
    with pytest.raises(ValueError, match=match):
        pnode.odeint(decay, torch.ones(2, dtype=torch.float64), T01, method="rk4", options=opts)


def test_bad_dtype_and_tolerance():
    with pytest.raises(TypeError, match="y0 must be float32 or float64"):
        pnode.odeint(decay, torch.ones(2, dtype=torch.int64), T01)
    with pytest.raises(TypeError, match="y0 must be float32 or float64"):
        pnode.odeint(decay, torch.ones(2, dtype=torch.float16), T01)
    with pytest.raises(ValueError, match="rtol must be positive"):
        pnode.odeint(decay, torch.ones(2, dtype=torch.float64), T01, rtol=-1.0)


def test_bad_checkpoint():
    with pytest.raises(ValueError, match="strategy 'revolve' is unknown"):
        pnode.Checkpoint("revolve")
    with pytest.raises(ValueError, match="exactly one of max_ram or max_memory"):
        pnode.Checkpoint("binomial")
    with pytest.raises(ValueError, match="max_ram must be a positive int"):
        pnode.Checkpoint("binomial", max_ram=0)
    with pytest.raises(ValueError, match="max_memory='lots'"):
        pnode.Checkpoint("binomial", max_memory="lots")


def test_func_output_shape_error_names_both_shapes():
    with pytest.raises(ValueError, match=r"returned shape \(2,\) but the state has shape \(3,\)"):
        pnode.odeint(lambda t, y: y[:2], torch.ones(3, dtype=torch.float64), T01)


def test_adjoint_kwargs_accepted_with_warning():
    with pytest.warns(UserWarning, match="ignores adjoint_rtol"):
        pnode.odeint(decay, torch.ones(2, dtype=torch.float64), T01, adjoint_rtol=1e-3)
    with pytest.raises(TypeError, match="unexpected keyword"):
        pnode.odeint(decay, torch.ones(2, dtype=torch.float64), T01, foo=1)
