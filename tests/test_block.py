"""ODEBlock: a module with its own solver prefix and exact gradients (against plain-torch
RK4 through the same steps, 1e-10), and block-level recomputation
(ODEBlock(recompute_forward=True)): the same gradients as keeping each block's trajectory
(1e-12 relative), the re-solve takes the forward's steps, and the extra forward steps show
in ``stats["recomputed_steps"]``."""
import pytest
import torch
from torch import nn

import pnode
from helpers import TanhField, rel_err
from reference import rk_solve, rk_tableau


class DampedMLP(nn.Module):
    """dy/dt = W2 tanh(W1 y + b1) + b2 - 0.2 y, weights from ``seed``."""

    def __init__(self, dim=4, seed=0, dtype=torch.float64):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.l1, self.l2 = nn.Linear(dim, 16).to(dtype), nn.Linear(16, dim).to(dtype)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.4)

    def forward(self, t, y):
        return self.l2(torch.tanh(self.l1(y))) - 0.2 * y


def stack_gradients(recompute, dtype=torch.float64, blocks=4, **solver_kwargs):
    fields = [DampedMLP(seed=k, dtype=dtype) for k in range(blocks)]
    model = nn.Sequential(*[pnode.ODEBlock(f, t1=0.5, recompute_forward=recompute, **solver_kwargs)
                            for f in fields])
    x = torch.randn(8, 4, dtype=dtype, generator=torch.Generator().manual_seed(9)).requires_grad_(True)
    out = model(x)
    forward_steps = [blk.solver.step_times.clone() for blk in model]
    grads = torch.autograd.grad(out.pow(2).sum(), [x, *model.parameters()])
    backward_steps = [blk.solver.step_times.clone() for blk in model]
    stats = [dict(blk.stats) for blk in model]
    for blk in model:
        blk.solver.close()
    return out.detach(), grads, forward_steps, backward_steps, stats


@pytest.mark.parametrize("kwargs", [
    dict(method="rk4", options={"step_size": 0.01}),  # 4 blocks x 50 RK4 steps
    dict(method="dopri5", rtol=1e-7, atol=1e-9),
    dict(method="crank_nicolson", options={"step_size": 0.05, "jacobian": "dense"}),
    dict(method="rk4", options={"step_size": 0.01}, checkpoint=pnode.Checkpoint("binomial", max_ram=4)),
    dict(method="dopri5", rtol=1e-7, checkpoint=pnode.Checkpoint("binomial", max_ram=3)),
], ids=["rk4-50", "dopri5", "cn", "rk4-binomial", "dopri5-binomial"])
def test_recompute_forward_gives_the_same_gradients(kwargs):
    ya, ga, fa, _, sa = stack_gradients(False, **kwargs)
    yb, gb, fb, bb, sb = stack_gradients(True, **kwargs)
    assert torch.equal(ya, yb)
    for a, b in zip(ga, gb):
        assert rel_err(b, a) <= 1e-12
    for f, b, st in zip(fb, bb, sb):
        assert torch.equal(f, b)  # the re-solve took exactly the forward's steps
        assert st["recomputed_steps"] >= len(f) - 1  # the extra forward solve is reported
    if kwargs["method"] == "rk4":
        assert all(len(f) - 1 == 50 for f in fa)


def test_recompute_forward_float32():
    ya, ga, *_ = stack_gradients(False, dtype=torch.float32, blocks=2, method="dopri5", rtol=1e-5)
    yb, gb, *_ = stack_gradients(True, dtype=torch.float32, blocks=2, method="dopri5", rtol=1e-5)
    assert torch.equal(ya, yb)
    for a, b in zip(ga, gb):
        assert rel_err(b, a) <= 1e-6


def test_resolve_detects_changed_parameters():
    f = DampedMLP()
    blk = pnode.ODEBlock(f, recompute_forward=True, method="dopri5", rtol=1e-8)
    x = torch.randn(3, 4, dtype=torch.float64)
    out = blk(x)
    with torch.no_grad():
        f.l1.weight.mul_(3.0)  # the re-solve now sees another vector field
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
    blk.solver.close()


def test_odeblock_is_a_module_with_prefixes_and_exact_gradients():
    torch.manual_seed(0)
    blocks = [pnode.ODEBlock(TanhField(), t1=0.5, method="rk4", options={"step_size": 0.1}) for _ in range(2)]
    p0 = int(blocks[0].solver.prefix.removeprefix("block").rstrip("_"))
    assert blocks[1].solver.prefix == f"block{p0 + 1}_"
    model = nn.Sequential(*blocks)
    assert len(list(model.parameters())) == 4
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    out = model(x)
    assert out.shape == x.shape
    g = torch.autograd.grad(out.pow(2).sum(), [x, *model.parameters()])

    def ref(x):
        for blk in blocks:
            x = rk_solve(blk.func, x, blk.solver.step_times, [0.0, 0.5], rk_tableau("4"))[-1]
        return x
    r = torch.autograd.grad(ref(x).pow(2).sum(), [x, *model.parameters()])
    for a, b in zip(g, r):
        assert rel_err(a, b) <= 1e-10


def test_odeblock_recompute_forward_same_gradients():
    torch.manual_seed(1)
    f = TanhField()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    res = []
    for recompute in (False, True):
        blk = pnode.ODEBlock(f, t1=1.0, recompute_forward=recompute, method="dopri5", rtol=1e-6)
        y = blk(x)
        res.append((y.detach(), *torch.autograd.grad(y.sum(), [x, *f.parameters()]), blk.stats["steps"]))
        blk.solver.close()
    (ya, *ga, na), (yb, *gb, nb) = res
    assert torch.equal(ya, yb) and na == nb
    for a, b in zip(ga, gb):
        assert rel_err(a, b) <= 1e-12
