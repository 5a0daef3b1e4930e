"""Structure of stiff implicit parts: ``options["sparsity"]`` (exact sparse Jacobians by
colouring, PETSc's preconditioners), ``options["linear"]`` (one Jacobian per call), and
the warning when large samples would leave GMRES unpreconditioned."""
import itertools
import warnings

import numpy as np
import pytest
import torch
from helpers import rel_err
from petsc4py import PETSc
from torch import nn

import pnode
from pnode.bridge import Clock, StateLayout
from pnode.dynamics import Dynamics
from pnode.forms.coloring import colour_rows, pattern
from pnode.forms.implicit import UnpreconditionedWarning
from pnode.forms.sparse import SparseJacobian
from pnode.settings import resolve
from pnode.methods import get_method
from pnode.stats import Stats


def stencil_mask(grid, width, periodic):
    """``(d, d)`` bool: point i depends on j when every axis offset is within ``width``
    (wrapping on periodic axes) -- written with plain loops, independently of pnode."""
    points = list(itertools.product(*[range(n) for n in grid]))
    mask = np.zeros((len(points), len(points)), dtype=bool)
    for i, p in enumerate(points):
        for j, q in enumerate(points):
            ok = True
            for a, n in enumerate(grid):
                diff = abs(p[a] - q[a])
                if periodic[a]:
                    diff = min(diff, n - diff)
                ok &= diff <= width
            mask[i, j] = ok
    return torch.as_tensor(mask)


class MaskedField(nn.Module):
    """``f(y) = tanh(y W^T) - y**3``, per sample, with ``W`` zero outside a mask: a
    nonlinear field whose Jacobian has exactly the mask's pattern."""

    def __init__(self, mask, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d = mask.shape[0]
        self.w = nn.Parameter(torch.randn(d, d, generator=g, dtype=torch.float64) * mask / 2)
        self.register_buffer("mask", mask.double())

    def forward(self, t, y):
        return torch.tanh(y @ (self.w * self.mask).T) - 0.5 * y ** 3


def _linearization(func, y):
    dyn = Dynamics(func, StateLayout.of(y), list(func.parameters()), Clock(0.0, 1.0), Stats())
    return dyn.linearize(0.0, y.reshape(-1).clone())


CASES = [((16,), 2, (True,)), ((16,), 1, (False,)), ((6, 7), 1, (True, True)), ((7, 6), 1, (False, True))]


@pytest.mark.parametrize("grid, width, periodic", CASES)
def test_coloured_jacobian_equals_autograd(grid, width, periodic):
    """``shift*I - J`` assembled from one batched VJP per colour equals the dense
    autograd Jacobian of each sample to 1e-13 (1-D and 2-D, periodic and bounded)."""
    mask = stencil_mask(grid, width, periodic)
    d, B = mask.shape[0], 3
    func = MaskedField(mask)
    spec = resolve({"sparsity": {"grid": grid, "stencil": width, "periodic": periodic}},
                   get_method("implicit_euler")).implicit.sparsity
    rows, cols = pattern(spec, d)
    assert torch.equal(torch.as_tensor(mask.numpy()[rows, cols]), torch.ones(len(rows), dtype=torch.bool))
    assert len(rows) == int(mask.sum())  # the pattern is the stencil, no more
    y = torch.randn(B, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    sp = SparseJacobian((B, d), (rows, cols), None, PETSc.COMM_SELF)
    # greedy: at most one more colour than the rows a row conflicts with
    assert (2 * width + 1) ** len(grid) <= sp.ncolours <= (4 * width + 1) ** len(grid)
    lin = _linearization(func, y)
    sp.set_point(lin, 2.5)  # also verifies against the matrix-free product
    got = torch.as_tensor(sp.mat.convert("dense").getDenseArray().copy())
    for b in range(B):
        jac = torch.func.jacrev(lambda x: func(0.0, x))(y[b]).detach()
        block = got[b * d:(b + 1) * d, b * d:(b + 1) * d]
        assert rel_err(block, 2.5 * torch.eye(d, dtype=torch.float64) - jac) <= 1e-13
    off = got.clone()
    for b in range(B):
        off[b * d:(b + 1) * d, b * d:(b + 1) * d] = 0
    assert off.abs().max() == 0
    sp.destroy()


def test_explicit_pattern_and_greedy_colouring():
    """An explicit (rows, cols) pattern: rows of one colour never share a column."""
    rows = np.array([0, 0, 1, 2, 3, 3, 4])
    cols = np.array([1, 4, 2, 0, 3, 1, 0])
    spec = resolve({"sparsity": (rows, cols)}, get_method("implicit_euler")).implicit.sparsity
    r, c = pattern(spec, 5)
    colour, k = colour_rows(r, c, 5)
    for col in range(5):
        owners = colour[r[c == col]]
        assert len(set(owners.tolist())) == len(owners)
    assert k >= 2


class Coupled(nn.Module):
    """A stencil field plus a coupling through the batch mean."""

    def __init__(self, mask):
        super().__init__()
        self.inner = MaskedField(mask)

    def forward(self, t, y):
        return self.inner(t, y) + 0.3 * torch.tanh(y.mean(0, keepdim=True))


@pytest.mark.parametrize("case", ["couples samples", "stencil too narrow"])
def test_wrong_pattern_raises(case):
    """A field outside its declared pattern fails the first assembly's check with an
    error naming options['sparsity'] (never a silently wrong Jacobian)."""
    mask = stencil_mask((12,), 2, (True,))
    func = Coupled(mask) if case == "couples samples" else MaskedField(mask)
    width = 2 if case == "couples samples" else 1
    y0 = torch.randn(3, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    opts = {"step_size": 0.1, "sparsity": {"grid": (12,), "stencil": width, "periodic": True}}
    with pytest.raises(ValueError, match=r"options\['sparsity'\] does not hold"):
        pnode.odeint(func, y0, torch.tensor([0.0, 0.2]), method="implicit_euler", options=opts)


@pytest.mark.parametrize("pc", ["lu", "ilu", "asm", "gamg"])
def test_sparse_gradient_equals_dense_path(pc):
    """Forward and adjoint solves with PETSc's PCs on the coloured matrix converge and
    give the solution and gradient of the dense-LU path to 1e-8 (kencarp3, 2-D periodic)."""
    mask = stencil_mask((3, 4), 1, (True, True))
    y0 = torch.randn(2, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0.0, 0.3, 0.5], dtype=torch.float64)
    out = []
    for opts in ({"jacobian": "dense"},
                 {"sparsity": {"grid": (3, 4), "stencil": 1, "periodic": True},
                  "petsc_options": {"pc_type": pc, "ksp_type": "gmres"}}):
        func = MaskedField(mask, seed=4)
        petsc = opts.pop("petsc_options", None)
        with pnode.ODESolver(func, method="kencarp3", options=dict(step_size=0.05, **opts),
                             petsc_options=petsc) as solver:
            y = y0.clone().requires_grad_(True)
            ys = solver(y, t)
            grads = torch.autograd.grad(ys.pow(2).sum(), [y, func.w])
            if petsc is not None:  # the options chose PETSc's PC on the assembled matrix
                assert solver.petsc_ts.getSNES().getKSP().getPC().getType() == pc
        out.append((ys.detach(), grads))
    assert rel_err(out[1][0], out[0][0]) <= 1e-8
    for a, b in zip(out[1][1], out[0][1]):
        assert rel_err(a, b) <= 1e-8


class CircularConv(nn.Module):
    """SINODE's implicit part: a learnable circular convolution of kernel 5 (linear)."""

    def __init__(self, t_dependent=False):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 5, padding=2, padding_mode="circular", bias=False).double()
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[0.3, 1.0, -3.0, 1.0, 0.3]]]))
        self.t_dependent = t_dependent

    def forward(self, t, y):
        out = self.conv(y.unsqueeze(1)).squeeze(1)
        return out * (1 + t) if self.t_dependent else out


def _imex_gradient(n, opts, method="kencarp4", implicit=None):
    torch.manual_seed(7)
    implicit = implicit or CircularConv()
    explicit = nn.Sequential(nn.Linear(n, 16), nn.Tanh(), nn.Linear(16, n)).double()
    y0 = torch.randn(4, n, dtype=torch.float64, generator=torch.Generator().manual_seed(8), requires_grad=True)
    params = [y0] + list(implicit.parameters()) + list(explicit.parameters())
    opts = dict(opts)
    steps = {} if opts.pop("adaptive", False) else {"step_size": 0.05}
    with pnode.ODESolver(implicit, method=method, rtol=1e-6, atol=1e-8,
                         options=dict(func_explicit=lambda t, y: explicit(y), **steps, **opts)) as solver:
        ys = solver(y0, torch.tensor([0.0, 0.1, 0.2], dtype=torch.float64))
        grads = torch.autograd.grad(ys.pow(2).sum(), params)
        return ys.detach(), grads, dict(solver.stats)


@pytest.mark.parametrize("n, structure", [(16, {}), (16, {"jacobian": "matrix-free"}), (16, {"adaptive": True}),
                                          (24, {"adaptive": True,
                                                "sparsity": {"grid": (24,), "stencil": 2, "periodic": True}}),
                                          (40, {"sparsity": {"grid": (40,), "stencil": 2, "periodic": True}})])
def test_linear_part_same_gradient_fewer_vjps(n, structure):
    """options['linear'] builds the operator once per call (adaptive steps: the Jacobian
    once, a new factorisation per shift): the same solution and gradient as rebuilding it
    every stage (1e-10 relative), with fewer VJPs."""
    ys0, g0, s0 = _imex_gradient(n, structure)
    ys1, g1, s1 = _imex_gradient(n, dict(linear=True, **structure))
    assert rel_err(ys1, ys0) <= 1e-10
    for a, b in zip(g1, g0):
        assert rel_err(a, b) <= 1e-10
    if structure.get("jacobian") == "matrix-free":  # no operator to rebuild: the products are the same
        assert s1["vjp_evals"] <= s0["vjp_evals"]
    else:  # blocks: d VJPs per stage; sparse: one per colour per stage -> once per call
        assert s1["vjp_evals"] < s0["vjp_evals"] / 2, (s1["vjp_evals"], s0["vjp_evals"])
    assert s1["newton_iterations"] <= s0["newton_iterations"]


def test_linear_dense_implicit_euler_equals_rebuilding():
    """The dense-LU path with options['linear'] (assembled once per shift) gives the
    gradient of the rebuilding path to 1e-10 (implicit_euler, no explicit part)."""
    out = []
    for opts in ({"jacobian": "dense"}, {"jacobian": "dense", "linear": True}):
        func = CircularConv()
        y0 = torch.randn(3, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(9), requires_grad=True)
        ys = pnode.odeint(func, y0, torch.tensor([0.0, 0.3]), method="implicit_euler",
                          options=dict(step_size=0.1, **opts))
        out.append(torch.autograd.grad(ys.pow(2).sum(), [y0, func.conv.weight]))
    for a, b in zip(out[1], out[0]):
        assert rel_err(a, b) <= 1e-10


@pytest.mark.parametrize("implicit", [MaskedField(stencil_mask((16,), 2, (True,))), CircularConv(True)],
                         ids=["nonlinear", "time-dependent"])
def test_linear_declaration_checked(implicit):
    """A field that is not linear with a constant Jacobian raises naming options['linear']."""
    with pytest.raises(ValueError, match=r"options\['linear'\]=True but func is not linear"):
        _imex_gradient(16, {"linear": True}, implicit=implicit)


def test_large_samples_warn_once_without_pattern():
    """Samples above the dense-block limit with nothing to precondition: one warning
    naming the remedies; none with a declared pattern."""
    y0 = torch.randn(2, 80, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    t = torch.tensor([0.0, 0.1])
    with pnode.ODESolver(CircularConv(), method="implicit_euler", options={"step_size": 0.05}) as solver:
        with pytest.warns(UnpreconditionedWarning, match=r"options\['sparsity'\].*options\['preconditioner'\]"):
            solver(y0, t)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UnpreconditionedWarning)
            solver(y0, t)  # once per workspace
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnpreconditionedWarning)
        pnode.odeint(CircularConv(), y0, t, method="implicit_euler",
                     options={"step_size": 0.05, "sparsity": {"grid": 80, "stencil": 2, "periodic": True}})


@pytest.mark.parametrize("value, error, match", [
    ({"grid": (0,)}, ValueError, r"\['grid'\]"),
    ({"grid": (4, 4, 4)}, ValueError, r"\['grid'\]"),
    ({"grid": (8,), "stencil": -1}, ValueError, r"\['stencil'\]"),
    ({"grid": (8,), "periodic": (True, False)}, ValueError, r"\['periodic'\]"),
    ({"grid": (8,), "width": 2}, ValueError, r"options\['sparsity'\]"),
    ("stencil", TypeError, r"options\['sparsity'\]"),
    (([0, 1], [1]), ValueError, r"options\['sparsity'\]"),
])
def test_bad_sparsity_named(value, error, match):
    with pytest.raises(error, match=match):
        resolve({"sparsity": value}, get_method("kencarp4"))


def test_structure_options_checked():
    with pytest.raises(TypeError, match=r"options\['linear'\]"):
        resolve({"linear": 1}, get_method("kencarp4"))
    with pytest.raises(ValueError, match=r"options\['linear'\] needs an implicit method"):
        resolve({"linear": True}, get_method("dopri5"))
    with pytest.raises(ValueError, match=r"options\['sparsity'\].*jacobian"):
        resolve({"sparsity": {"grid": 8}, "jacobian": "dense"}, get_method("kencarp4"))
    with pytest.raises(ValueError, match=r"grid \(8,\) has 8 points but each sample of the state has 6"):
        pnode.odeint(lambda t, y: -y, torch.ones(2, 6, dtype=torch.float64), torch.tensor([0.0, 0.1]),
                     method="implicit_euler", options={"step_size": 0.1, "sparsity": {"grid": 8}})


class Conv2dField(nn.Module):
    """A 2-D neural reaction-diffusion field on a bounded ``(h, w)`` grid: a 3x3
    convolution with zero padding plus a pointwise cubic term, ``(B, h*w) -> (B, h*w)``."""

    def __init__(self, h, w):
        super().__init__()
        self.h, self.w = h, w
        g = torch.Generator().manual_seed(11)
        self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False).double()
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(1, 1, 3, 3, generator=g, dtype=torch.float64))

    def forward(self, t, y):
        return self.conv(y.reshape(-1, 1, self.h, self.w)).reshape(y.shape) - 0.5 * y ** 3


def test_2d_convolution_coloured_jacobian_and_gradient():
    """A 3x3 convolution on a bounded 12x12 grid, declared as a 2-D grid: the coloured
    Jacobian equals autograd's per-sample Jacobian to 1e-13, and the solution and gradient
    with options['sparsity'] equal the matrix-free path's to 1e-8 (kencarp4, fixed step;
    the matrix-free GMRES converges to pnode's ksp_rtol 1e-12)."""
    h = w = 12
    sparsity = {"grid": (h, w), "stencil": 1, "periodic": False}
    func = Conv2dField(h, w)
    y0 = torch.rand(2, h * w, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    rows, cols = pattern(resolve({"sparsity": sparsity}, get_method("kencarp4")).implicit.sparsity, h * w)
    sp = SparseJacobian((2, h * w), (rows, cols), None, PETSc.COMM_SELF)
    assert sp.ncolours == 9  # a 3x3 box on a 2-D grid needs 9 colours; greedy finds them
    sp.set_point(_linearization(func, y0), 3.0)
    got = torch.as_tensor(sp.mat.convert("dense").getDenseArray().copy())
    sp.destroy()
    for b in range(2):
        jac = torch.func.jacrev(lambda x: func(0.0, x))(y0[b]).detach()
        block = got[b * h * w:(b + 1) * h * w, b * h * w:(b + 1) * h * w]
        assert rel_err(block, 3.0 * torch.eye(h * w, dtype=torch.float64) - jac) <= 1e-13
    t = torch.tensor([0.0, 0.1, 0.2], dtype=torch.float64)
    out = []
    for opts in ({"jacobian": "matrix-free"}, {"sparsity": sparsity}):
        func = Conv2dField(h, w)
        y = y0.clone().requires_grad_(True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnpreconditionedWarning)  # the matrix-free reference
            ys = pnode.odeint(func, y, t, method="kencarp4", options=dict(step_size=0.05, **opts))
        out.append((ys.detach(), torch.autograd.grad(ys.pow(2).sum(), [y, func.conv.weight])))
    assert rel_err(out[1][0], out[0][0]) <= 1e-8
    for a, b in zip(out[1][1], out[0][1]):
        assert rel_err(a, b) <= 1e-8


def _large_operator_solve(petsc=None, linear=False):
    """A stiff linear part of norm ~4e8 (a circular second difference times 1e8) at a state
    close to its null space, so that Newton's stage residual has a round-off floor of about
    1e-7, far above pnode's fixed default snes_atol (1e-12) and snes_rtol times the first
    residual."""
    conv = CircularConv()
    with torch.no_grad():
        conv.conv.weight.copy_(torch.tensor([[[0.0, 1e8, -2e8, 1e8, 0.0]]]))
    x = torch.linspace(0, 2 * np.pi, 65, dtype=torch.float64)[:-1]
    y0 = (1.0 + 1e-6 * torch.sin(x)).repeat(4, 1) * torch.arange(1, 5, dtype=torch.float64).reshape(4, 1)
    y0.requires_grad_(True)
    with pnode.ODESolver(conv, method="kencarp4", petsc_options=petsc,
                         options={"step_size": 0.05, "linear": linear, "func_explicit": lambda t, y: -0.1 * y,
                                  "sparsity": {"grid": (64,), "stencil": 2, "periodic": True}}) as solver:
        ys = solver(y0, torch.tensor([0.0, 0.1], dtype=torch.float64))
        grads = torch.autograd.grad(ys.pow(2).sum(), [y0, conv.conv.weight])
        return ys.detach(), grads, solver.petsc_ts.getSNES().getTolerances()[1]


def test_newton_absolute_tolerance_scaled_to_the_operator():
    """Without a user snes_atol, Newton's absolute tolerance is scaled to the residual's
    round-off (10 eps (shift + |J|) |u|): the solve converges, to the solution and gradient
    of the single linear solve per stage (options['linear'], no Newton test) within 1e-9
    relative; a user's snes_atol is kept, and this one (pnode's former fixed default)
    makes Newton fail at round-off."""
    ys1, g1, _ = _large_operator_solve(linear=True)
    ys0, g0, atol = _large_operator_solve()
    assert 1e-8 < atol < 1e-3  # scaled: far above the fixed 1e-12
    assert rel_err(ys0, ys1) <= 1e-9
    for a, b in zip(g0, g1):
        assert rel_err(a, b) <= 1e-9
    with pytest.raises(pnode.SolverError, match="DIVERGED_NONLINEAR_SOLVE"):
        _large_operator_solve(petsc={"snes_atol": 1e-12})


def _ks512_gradient(opts, n=512):
    """Gradient (initial state, convolution, MLP) of |y(0.25)|^2 for SINODE's KS model at
    ``n`` points, one sample: the convolution initialised to the central differences of
    ``-u_xx - u_xxxx`` on a periodic domain of length 22 (operator norm 16/dx^4, ~5e6 at 512),
    an MLP explicit part, kencarp4 at the benchmark's fixed step 0.125."""
    torch.manual_seed(3)
    implicit, dx = CircularConv(), 22.0 / n
    stencil = [-1 / dx ** 4, 4 / dx ** 4 - 1 / dx ** 2, -6 / dx ** 4 + 2 / dx ** 2, 4 / dx ** 4 - 1 / dx ** 2, -1 / dx ** 4]
    with torch.no_grad():
        implicit.conv.weight.copy_(torch.tensor(stencil, dtype=torch.float64).reshape(1, 1, 5))
    explicit = nn.Sequential(nn.Linear(n, 16), nn.Tanh(), nn.Linear(16, n)).double()
    x = torch.arange(n, dtype=torch.float64) * dx
    y0 = (torch.cos(2 * np.pi * x / 22) + 0.5 * torch.sin(4 * np.pi * x / 22)).reshape(1, n).requires_grad_(True)
    params = [y0] + list(implicit.parameters()) + list(explicit.parameters())
    with pnode.ODESolver(implicit, method="kencarp4",
                         options=dict(step_size=0.125, func_explicit=lambda t, y: -explicit(y), **opts)) as solver:
        ys = solver(y0, torch.tensor([0.0, 0.25], dtype=torch.float64))
        return torch.autograd.grad(ys[-1].pow(2).sum(), params)


def test_ks512_sparse_linear_gradient_equals_dense_jacobian():
    """KS at 512 unknowns per sample: the gradient of the sparse path with options['linear']
    (coloured Jacobian assembled and LU-factored once per call) equals, to 1e-8 relative, the
    gradient of the same discrete solve with the whole 512 x 512 Jacobian formed densely
    (jacrev) and LU-factored at every stage (options['jacobian'] = 'dense', Newton)."""
    sparse = _ks512_gradient({"sparsity": {"grid": (512,), "stencil": 2, "periodic": True}, "linear": True})
    dense = _ks512_gradient({"jacobian": "dense"})
    for a, b in zip(sparse, dense):
        assert rel_err(a, b) <= 1e-8
