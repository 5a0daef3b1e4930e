"""pnode.sde as torchsde 0.2.6: every method's sdeint_adjoint gradient equals backprop
through sdeint (1e-10, float64) for each noise type it supports, fixed and adaptive
steps; in-place parameter changes between forward and backward raise; the API surface
(default methods, logqp, extra state, reversed Brownian motion, Lévy areas)."""
import pytest
import torch

import pnode.sde as torchsde
from helpers import NOISE_CHANNELS as M, SDE_BATCH as B, SDE_DIM as D, NeuralSDE, grads, rel_norm

pytestmark = pytest.mark.usefixtures("float64_default")

_METHODS = [("euler", "ito", {}), ("milstein", "ito", {}), ("milstein", "ito", {"grad_free": True}),
            ("srk", "ito", {}), ("midpoint", "stratonovich", {}), ("heun", "stratonovich", {}),
            ("euler_heun", "stratonovich", {}), ("reversible_heun", "stratonovich", {}),
            ("milstein", "stratonovich", {}), ("milstein", "stratonovich", {"grad_free": True}),
            ("log_ode", "stratonovich", {})]
_LEVY = {"srk": "space-time", "log_ode": "foster"}


def _cases():
    for method, sde_type, options in _METHODS:
        for noise_type in ("diagonal", "scalar", "additive", "general"):
            if method in ("milstein", "srk") and noise_type == "general":
                continue
            yield method, sde_type, options, noise_type


@pytest.mark.filterwarnings("ignore:adaptive stepping with the Euler")
@pytest.mark.parametrize("method,sde_type,options,noise_type", list(_cases()))
def test_adjoint_gradient_equals_backprop(method, sde_type, options, noise_type):
    sde = NeuralSDE(noise_type, sde_type)
    y0 = torch.randn(B, D, requires_grad=True)
    ts = torch.tensor([0.0, 0.3, 0.45, 1.0])
    params = [y0] + list(sde.parameters())
    for adaptive in (False, True):
        bm = torchsde.BrownianInterval(0.0, 1.0, size=(B, M[noise_type]), entropy=5,
                                       levy_area_approximation=_LEVY.get(method, "none"))
        kw = dict(bm=bm, method=method, dt=0.05, options=options, adaptive=adaptive,
                  rtol=1e-3, atol=1e-3)
        ys = torchsde.sdeint(sde, y0, ts, **kw)
        w = torch.randn_like(ys)
        g_bp = grads((w * ys).sum(), params, allow_unused=True)
        ys_adj = torchsde.sdeint_adjoint(sde, y0, ts, **kw)
        g_adj = grads((w * ys_adj).sum(), params, allow_unused=True)
        assert torch.equal(ys, ys_adj)
        for a, b in zip(g_adj, g_bp):
            assert (a is None) == (b is None)
            if b is not None:
                assert rel_norm(a, b) <= 1e-10, (adaptive, rel_norm(a, b))


@pytest.mark.parametrize("method", ["reversible_heun", "midpoint"])
def test_parameter_changed_in_place_before_backward_raises(method):
    sde = NeuralSDE("diagonal")
    y0 = torch.randn(B, D)
    ys = torchsde.sdeint_adjoint(sde, y0, [0.0, 0.5], dt=0.05, method=method)
    with torch.no_grad():
        next(sde.parameters()).add_(1.0)
    with pytest.raises(RuntimeError, match="inplace"):
        ys.sum().backward()


def test_defaults_follow_sde_and_noise_type():
    ito = NeuralSDE("diagonal", "ito")
    y0 = torch.randn(B, D)
    # srk needs the space-time Lévy area: the default bm has it, a plain one raises.
    torchsde.sdeint(ito, y0, [0.0, 0.2], dt=0.05)
    plain = torchsde.BrownianInterval(0.0, 0.2, size=(B, D))
    with pytest.raises(ValueError, match="levy_area_approximation"):
        torchsde.sdeint(ito, y0, [0.0, 0.2], bm=plain, dt=0.05)
    torchsde.sdeint(NeuralSDE("general", "ito"), y0, [0.0, 0.2], bm=torchsde.BrownianInterval(
        0.0, 0.2, size=(B, 2)), dt=0.05)  # euler: no Lévy area needed
    with pytest.warns(UserWarning, match="unexpected"):
        torchsde.sdeint(ito, y0, [0.0, 0.2], dt=0.05, method="euler", bogus=1)


class _Logqp(torch.nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor([0.5, -0.3]))

    def f(self, t, y):
        return self.a * y

    def g(self, t, y):
        return 0.5 + 0.1 * torch.sin(y)

    def h(self, t, y):
        return -y


def test_logqp_is_the_integrated_girsanov_penalty():
    sde = _Logqp()
    y0 = torch.randn(B, 2)
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(B, 3), entropy=1)
    ys, kl = torchsde.sdeint(sde, y0, [0.0, 0.5, 1.0], bm=bm, dt=0.1, method="euler", logqp=True)
    assert ys.shape == (3, B, 2) and kl.shape == (2, B)
    # Euler: the penalty's increment over a step is h * |(f - h_prior) / g|^2 / 2 at its start.
    y, acc = y0, torch.zeros(B)
    for k in range(10):
        t = 0.1 * k
        u = (sde.f(t, y) - sde.h(t, y)) / sde.g(t, y)
        acc = acc + 0.1 * 0.5 * (u ** 2).sum(1)
        y = y + sde.f(t, y) * 0.1 + sde.g(t, y) * bm(t, 0.1 * (k + 1))[:, :2]
        if k == 4:
            assert torch.allclose(kl[0], acc, rtol=1e-12, atol=1e-12)
            acc = torch.zeros(B)
    assert torch.allclose(kl[1], acc, rtol=1e-12, atol=1e-12)
    assert torch.allclose(ys[-1], y, rtol=1e-12, atol=1e-12)


def test_reversible_heun_extra_state_runs_backwards():
    sde = NeuralSDE("general")

    class Minus(torch.nn.Module):
        noise_type, sde_type = sde.noise_type, sde.sde_type

        def f(self, t, y):
            return -sde.f(-t, y)

        def g(self, t, y):
            return -sde.g(-t, y)

    y0 = torch.full((B, D), 0.1)
    ts = torch.linspace(0, 1.9, 20)
    bm = torchsde.BrownianInterval(ts[0], ts[-1], size=(B, 2), entropy=2)
    ys, (f, g, z) = torchsde.sdeint(sde, y0, ts, bm=bm, method="reversible_heun", dt=0.1, extra=True)
    back = torchsde.sdeint(Minus(), ys[-1], -ts.flip(0), bm=torchsde.ReverseBrownian(bm),
                           method="reversible_heun", dt=0.1, extra_solver_state=(-f, -g, z))
    assert (back.flip(0) - ys).abs().max() < 1e-8


def test_adjoint_gradient_through_extra_state():
    sde = NeuralSDE("diagonal")
    y0 = torch.randn(B, D, requires_grad=True)
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(B, D), entropy=3)
    kw = dict(bm=bm, method="reversible_heun", dt=0.1, extra=True)
    ys, extra = torchsde.sdeint(sde, y0, [0.0, 1.0], **kw)
    ys2, extra2 = torchsde.sdeint_adjoint(sde, y0, [0.0, 1.0], **kw)
    loss = lambda ys, e: ys.pow(2).sum() + e[0].sum() + e[2].pow(3).sum()  # noqa: E731
    params = [y0] + list(sde.parameters())
    g1 = grads(loss(ys2, extra2), params, allow_unused=True)
    g2 = grads(loss(ys, extra), params, allow_unused=True)
    for a, b in zip(g1, g2):
        assert (a is None) == (b is None)
        assert b is None or rel_norm(a, b) <= 1e-10


@pytest.mark.parametrize("levy", ["davie", "foster"])
def test_levy_area_shape_antisymmetry_and_chen(levy):
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(4, 3), levy_area_approximation=levy, entropy=9)
    w, u, a = bm(0.2, 0.7, return_U=True, return_A=True)
    assert w.shape == u.shape == (4, 3) and a.shape == (4, 3, 3)
    assert torch.equal(a, -a.transpose(-1, -2))
    # A_ij has the Lévy area's variance h^2/4, for a tree node and for a union of nodes.
    big = torchsde.BrownianInterval(0.0, 1.0, size=(40000, 2), levy_area_approximation=levy, entropy=1)
    for ta, tb in ((0.0, 0.5), (0.2, 0.7)):
        area = big(ta, tb, return_A=True)[1][:, 0, 1]
        assert abs(area.var().item() / ((tb - ta) ** 2 / 4) - 1) < 0.05
    assert torch.equal(bm(0.2, 0.7, return_A=True)[1], a)  # repeatable
    scalar = torchsde.BrownianInterval(0.0, 1.0, size=(5,), levy_area_approximation=levy)
    assert scalar(0.1, 0.3, return_A=True)[1].shape == (5,)


def test_brownian_family():
    w0 = torch.zeros(3, 2)
    tree = torchsde.BrownianTree(0.0, w0, t1=2.0, w1=torch.ones(3, 2), entropy=4)
    assert torch.allclose(tree(2.0), torch.ones(3, 2))
    path = torchsde.BrownianPath(0.0, w0 + 1)
    assert torch.allclose(path(0.5) - 1, path(0.0, 0.5))
    like = torchsde.brownian_interval_like(w0, 0.0, 1.0, entropy=1)
    assert like.size() == (3, 2) and isinstance(like, torchsde.BaseBrownian)
    given = torchsde.BrownianInterval(0.0, 1.0, W=torch.full((4,), 2.0))
    assert torch.equal(given(0.0, 1.0), torch.full((4,), 2.0))
    assert torchsde.settings.METHODS.srk in torchsde.settings.METHODS
