"""Parameters reached through containers in a closure get their gradient (equal to
torchdiffeq's backprop ``odeint`` through the same discrete scheme), or pnode raises a
ValueError naming ``adjoint_params``; a gradient is never silently missing."""
import functools
import gc

import pytest
import torch
import torchdiffeq

import pnode

T = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)
# torchdiffeq's rk4 is the 3/8 rule, pnode's rk4_38: the same discrete solution, so the
# gradients agree to round-off (tolerance 1e-10 relative)
PNODE = dict(method="rk4_38", options={"step_size": 0.1})
TDQ = dict(method="rk4", options={"step_size": 0.1})
TOL = 1e-10


def weights():
    g = torch.Generator().manual_seed(3)
    return (torch.randn(3, 3, generator=g, dtype=torch.float64) * 0.5).requires_grad_()


def y0_of(requires_grad):
    return torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(2, 3).requires_grad_(requires_grad)


class Holder:
    def __init__(self, W):
        self.W = W

    def field(self, t, y):
        return torch.tanh(y @ self.W)

    def __call__(self, t, y):
        return torch.tanh(y @ self.W)


def containers(W):
    params = {"W": W}
    lst = [W]
    holder = Holder(W)
    nested = {"layers": [{"W": W}]}

    def with_w(t, y, W):
        return torch.tanh(y @ W)
    return {
        "dict": lambda t, y: torch.tanh(y @ params["W"]),
        "list": lambda t, y: torch.tanh(y @ lst[0]),
        "attribute": lambda t, y: torch.tanh(y @ holder.W),
        "nested": lambda t, y: torch.tanh(y @ nested["layers"][0]["W"]),
        "partial": functools.partial(with_w, W=W),
        "bound method": holder.field,
        "callable object": holder,
    }


KINDS = list(containers(weights()))


def gradient(lib, kind, y0_grad, **kw):
    W = weights()
    f = containers(W)[kind]
    y0 = y0_of(y0_grad)
    ys = lib.odeint(f, y0, T, **kw)
    (ys ** 2).sum().backward()
    return W.grad, y0.grad


@pytest.mark.parametrize("y0_grad", [False, True], ids=["y0-fixed", "y0-grad"])
@pytest.mark.parametrize("kind", KINDS)
def test_container_parameters_get_torchdiffeqs_gradient(kind, y0_grad):
    got, got_y0 = gradient(pnode, kind, y0_grad, **PNODE)
    want, want_y0 = gradient(torchdiffeq, kind, y0_grad, **TDQ)
    assert got is not None, f"{kind}: W.grad silently missing"
    assert float((got - want).norm() / want.norm()) <= TOL
    if y0_grad:
        assert float((got_y0 - want_y0).norm() / want_y0.norm()) <= TOL


class Hidden:
    """Reaches its tensor through a property: discovery cannot see it."""

    def __init__(self, W):
        self._store = {"W": W}

    @property
    def W(self):
        return self._store["W"]


def hidden_field(W):
    h = Hidden(W)
    return lambda t, y: torch.tanh(y @ h.W)


def test_property_depth_is_found_or_refused():
    # a tensor deeper than discovery looks, reached through a property object: the
    # probe sees it in the graph and refuses, for both y0 settings
    W = weights()
    deep = [[[[[{"W": W}]]]]]

    def f(t, y):
        return torch.tanh(y @ deep[0][0][0][0][0]["W"])
    for y0_grad in (False, True):
        with pytest.raises(ValueError, match="adjoint_params"):
            pnode.odeint(f, y0_of(y0_grad), T, **PNODE)


def test_tensor_left_out_of_adjoint_params_is_refused():
    W, b = weights(), torch.zeros(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match=r"adjoint_params.*|shape \(3,\)"):
        pnode.odeint(lambda t, y: torch.tanh(y @ W) + b, y0_of(True), T, adjoint_params=[W], **PNODE)


def test_tensor_derived_outside_func_trains_its_source():
    # W = 2 * W0 made before the solve: pnode differentiates W (found in the closure),
    # and autograd carries the gradient on to W0, as torchdiffeq's backprop does
    grads = []
    for lib, kw in ((pnode, PNODE), (torchdiffeq, TDQ)):
        W0 = weights()
        W = 2 * W0
        ys = lib.odeint(lambda t, y: torch.tanh(y @ W), y0_of(False), T, **kw)
        (ys ** 2).sum().backward()
        grads.append(W0.grad)
    assert float((grads[0] - grads[1]).norm() / grads[1].norm()) <= TOL


def test_no_grad_evaluation_with_unlisted_tensor_is_fine():
    W = weights()
    f = hidden_field(W)
    with torch.no_grad():
        ys = pnode.odeint(f, y0_of(False), T, **PNODE)
    assert ys.shape == (3, 2, 3) and not ys.requires_grad


class InPlaceLeafCNF(torch.nn.Module):
    """ffjord's ``ODEfunc``: turns the state it is given into a leaf in place
    (``y.requires_grad_(True)``) and takes the exact divergence by ``autograd.grad`` of
    the output with respect to it; returns ``(dy, -div)``. With ``regularized``, as
    ffjord's ``RegularizedODEfunc`` with its Jacobian regulariser: time becomes a leaf
    made inside, a class made per call keeps the Jacobian (a reference cycle that holds
    that leaf until Python collects it), and a 0-d state integrates its norm."""

    def __init__(self, regularized=False):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.W1 = torch.nn.Parameter(torch.randn(2, 8, generator=g, dtype=torch.float64))
        self.W2 = torch.nn.Parameter(torch.randn(8, 2, generator=g, dtype=torch.float64) * 0.5)
        self.regularized = regularized

    def forward(self, t, states):
        class Context:
            pass
        y = states[0]
        with torch.set_grad_enabled(True):
            y.requires_grad_(True)
            tt = torch.tensor(float(t), dtype=y.dtype).requires_grad_(True)
            dy = torch.tanh(y @ self.W1) @ self.W2 * (1 + 0.1 * tt)
            rows = [torch.autograd.grad(dy[:, i].sum(), y, create_graph=True)[0] for i in range(2)]
            div = rows[0][:, 0] + rows[1][:, 1]
            if not self.regularized:
                return dy, -div.unsqueeze(1)
            Context.jac = torch.stack(rows, 1)
            return dy, -div.unsqueeze(1), Context.jac.pow(2).mean()


@pytest.mark.parametrize("regularized", [False, True])
def test_field_making_its_state_a_leaf_gets_torchdiffeqs_gradient(regularized):
    # the state pnode hands to func is pnode's own, whatever func does to its
    # requires_grad, and a leaf func made (kept a while by a reference cycle) is not the
    # user's: no adjoint_params error, and torchdiffeq's gradient (1e-10 relative).
    # Python's collector is off during the solves, so the cycle outlives the call, as it
    # does in a program whose allocations have not triggered a collection yet
    grads = []
    for lib, kw in ((pnode, PNODE), (torchdiffeq, TDQ)):
        func = InPlaceLeafCNF(regularized)
        x = torch.linspace(-1, 1, 8, dtype=torch.float64).reshape(4, 2)
        state = (x, torch.zeros(4, 1, dtype=torch.float64)) + ((torch.tensor(0.0, dtype=torch.float64),)
                                                               if regularized else ())
        gc.disable()
        try:
            out = lib.odeint(func, state, T, **kw)
        finally:
            gc.enable()
        loss = (out[0][-1] ** 2).sum() - out[1][-1].sum() + (out[2][-1] if regularized else 0)
        loss.backward()
        grads.append(torch.cat([func.W1.grad.flatten(), func.W2.grad.flatten()]))
    assert float((grads[0] - grads[1]).norm() / grads[1].norm()) <= TOL
