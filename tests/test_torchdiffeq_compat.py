"""pnode as a torchdiffeq drop-in: the approach of torchdiffeq's own suite (scalar, tuple and
batched states, both dtypes, reversed time, gradcheck on y0 and t, for every method), and
each torchdiffeq option, callback and the event interface, each against an independent
reference (exact solutions, finite differences of the same solve, plain-torch schemes)."""
import math
import warnings

import pytest
import torch

import pnode
from pnode.methods import METHODS, UNSUPPORTED
from pnode.tableaus import DIRK_TABLEAUS, TABLEAUS

GRADIENT_METHODS = sorted(m.name for m in METHODS.values() if m.adjoint and m.form != "imex" or
                          m.name.startswith("kencarp"))


class Sine(torch.nn.Module):
    """torchdiffeq's SineODE: y' = 2y/t + t^4 sin 2t - t^2 + 4t^3, known solution."""

    def forward(self, t, y):
        return 2 * y / t + t ** 4 * torch.sin(2 * t) - t ** 2 + 4 * t ** 3

    @staticmethod
    def exact(t):
        return (-0.5 * t ** 4 * torch.cos(2 * t) + 0.5 * t ** 3 * torch.sin(2 * t) + 0.25 * t ** 2 * torch.cos(2 * t)
                - t ** 3 + 2 * t ** 4 + (math.pi - 0.25) * t ** 2)


class Linear(torch.nn.Module):
    """y' = A y with a trainable A (batched states: rows are samples)."""

    def __init__(self, dim=3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.A = torch.nn.Parameter(0.3 * torch.randn(dim, dim, generator=g, dtype=torch.float64) - 0.2 * torch.eye(
            dim, dtype=torch.float64))

    def forward(self, t, y):
        return y @ self.A.T.to(y.dtype)


def _opts(name, h=0.05):
    return None if METHODS[name].adaptive else {"step_size": h}


_FIXED_TOL = {1: 5e-2, 2: 1e-3, 3: 1e-4, 4: 1e-5}  # relative error at h = 0.01 by order


# ---------------------------------------------------------------- states, dtypes, directions
@pytest.mark.parametrize("method", sorted(n for n, m in METHODS.items() if m.adjoint and n != "arkimex"))
@pytest.mark.parametrize("reverse", [False, True])
def test_scalar_state_every_method(method, reverse):
    """A 0-d state and its exact solution, forwards and backwards in time."""
    f = Sine()
    t = torch.linspace(1.0, 2.0, 5, dtype=torch.float64)
    if reverse:
        t = t.flip(0)
    y0 = f.exact(t[0]).clone()
    m = METHODS[method]
    rtol = 1e-9 if m.order > 2 else 1e-7
    ys = pnode.odeint(f, y0, t, method=method, rtol=rtol, atol=rtol * 0.1, options=_opts(method, 0.01))
    assert ys.shape == (5,)
    tol = (1e-5 if m.order > 2 else 1e-4) if m.adaptive else _FIXED_TOL[min(m.order, 4)]
    assert float(((ys - f.exact(t)) / f.exact(t)).abs().max()) < tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rk4_38", "implicit_midpoint"])
def test_tuple_and_batched_states_both_dtypes(method, dtype):
    """A tuple of a batched (4, 3) state and a 0-d state, in either dtype: each member is
    the exact solution of its own equation."""
    lin = Linear().to(dtype)
    y0 = (torch.ones(4, 3, dtype=dtype), torch.tensor(2.0, dtype=dtype))
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)  # t in float64 whatever the state

    def f(t, y):
        return lin(t, y[0]), -y[1]
    ys = pnode.odeint(f, y0, t, method=method, rtol=1e-8, atol=1e-9, options=_opts(method, 0.01))
    assert ys[0].shape == (3, 4, 3) and ys[1].shape == (3,) and ys[0].dtype == dtype
    exact0 = torch.stack([torch.ones(4, 3, dtype=torch.float64) @ torch.matrix_exp(lin.A.double().T * float(s))
                          for s in t])
    tol = 1e-5 if dtype == torch.float32 else (1e-4 if method == "implicit_midpoint" else 1e-7)
    assert float((ys[0].detach().double() - exact0).abs().max()) < tol
    assert float((ys[1].detach().double() - 2 * torch.exp(-t)).abs().max()) < tol


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_gradcheck_y0_and_t_every_method(method):
    """torch.autograd.gradcheck on (y0, t), as torchdiffeq's gradient tests do, for every
    method with gradients. The t-gradient is the exact flow's (see pnode.adjoint.
    time_gradient): it differs from the derivative of a fixed-step solve by the method's
    error, hence the looser tolerance for low orders."""
    f = Sine()
    t = torch.linspace(1.0, 1.5, 4, dtype=torch.float64, requires_grad=True)
    y0 = f.exact(t[0].detach()).clone().requires_grad_(True)
    m = METHODS[method]
    tol = {2: 1e-8 if method == "fehlberg2" else 1e-7, 3: 1e-8}.get(m.order, 1e-10)  # low orders: many steps
    kwargs = dict(method=method, rtol=tol, atol=tol * 1e-2, options=_opts(method, 5e-3))
    # fixed steps: the step grid restarts at each output time, so a later output moves
    # with an earlier time by the method's error (the exact flow's derivative is 0)
    if m.adaptive:
        rtol, atol = 1e-4, 1e-5
    else:
        rtol, atol = (5e-2, 5e-2) if m.order == 1 else (_FIXED_TOL[min(m.order, 4)] * 10, 1e-3)
    assert torch.autograd.gradcheck(lambda y, s: pnode.odeint(f, y, s, **kwargs), (y0, t), atol=atol, rtol=rtol)


# ---------------------------------------------------------------- gradients with respect to t
@pytest.mark.parametrize("method", ["dopri5", "rk4", "kencarp4", "crank_nicolson"])
@pytest.mark.parametrize("reverse", [False, True])
def test_time_gradient_matches_finite_differences_of_the_solve(method, reverse):
    """d loss / d t for every output time (first included) against central differences of
    the same solve in t, for a non-autonomous field with trainable parameters."""
    lin = Linear()

    def f(t, y):
        return lin(t, y) + torch.sin(3 * t)
    t = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=torch.float64)
    if reverse:
        t = t.flip(0)
    y0 = torch.tensor([[1.0, -0.5, 0.2]], dtype=torch.float64)
    w = torch.randn(4, 1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    kwargs = dict(method=method, rtol=1e-12, atol=1e-12, options=_opts(method, 1e-3))

    def loss(times):
        return (pnode.odeint(f, y0, times, **kwargs) * w).sum()
    tg = t.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(tg), tg)
    eps = 1e-5
    fd = torch.stack([(loss(t + eps * e) - loss(t - eps * e)) / (2 * eps) for e in torch.eye(4, dtype=torch.float64)])
    tol = 1e-6 if METHODS[method].adaptive else 1e-4  # fixed steps: the method's error (see above)
    assert float((g - fd).abs().max()) < tol * float(fd.abs().max())


def test_time_gradient_with_state_and_parameter_gradients_together():
    """All three gradients from one backward equal those of separate backward passes."""
    lin = Linear()
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64, requires_grad=True)
    y0 = torch.ones(2, 3, dtype=torch.float64, requires_grad=True)
    pnode.odeint(lin, y0, t, rtol=1e-10).pow(2).sum().backward()
    both = (t.grad.clone(), y0.grad.clone(), lin.A.grad.clone())
    t.grad = y0.grad = lin.A.grad = None
    ys = pnode.odeint(lin, y0, t.detach(), rtol=1e-10)
    ys.pow(2).sum().backward()
    assert torch.allclose(both[1], y0.grad, rtol=1e-12) and torch.allclose(both[2], lin.A.grad, rtol=1e-12)
    # for an autonomous field, shifting every time shifts nothing: the t-gradients sum to 0
    assert abs(float(both[0].sum())) < 1e-9 * float(both[0].abs().max())


def test_time_gradient_refused_with_a_mass_matrix():
    t = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="mass"):
        pnode.odeint(lambda t, y: -y, torch.ones(2, dtype=torch.float64), t, method="implicit_euler",
                     options={"mass": torch.eye(2, dtype=torch.float64), "step_size": 0.1})


# ---------------------------------------------------------------- the new tableaus
@pytest.mark.parametrize("name", sorted(TABLEAUS))
def test_registered_tableau_has_its_order(name):
    """The coefficients, checked independently of PETSc: a plain-torch RK with the declared
    tableau converges at the declared order on y' = y cos t (halving h divides the error
    by about 2^order), and pnode's fixed-step solve equals that plain RK to round-off."""
    tab = TABLEAUS[name]
    A = torch.tensor(tab.dense_A(), dtype=torch.float64).reshape(tab.stages, tab.stages)
    b = torch.tensor([float(x) for x in tab.b], dtype=torch.float64)
    c = torch.tensor(tab.c, dtype=torch.float64)

    def f(t, y):
        return y * torch.cos(t)

    def plain(h, T=1.0):
        y, t = torch.tensor(1.0, dtype=torch.float64), 0.0
        for _ in range(round(T / h)):
            k = []
            for i in range(tab.stages):
                k.append(f(torch.tensor(t + float(c[i]) * h, dtype=torch.float64), y + h * sum(A[i, j] * k[j] for j in range(i))))
            y, t = y + h * sum(b[i] * k[i] for i in range(tab.stages)), t + h
        return y
    exact = math.exp(math.sin(1.0))
    h = 0.5 if tab.order >= 8 else 0.1
    e1, e2 = abs(float(plain(h)) - exact), abs(float(plain(h / 2)) - exact)
    assert math.log2(e1 / e2) > tab.order - 0.5
    ys = pnode.odeint(f, torch.tensor(1.0, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64),
                      method=name, options={"step_size": h / 2})
    assert abs(float(ys[-1]) - float(plain(h / 2))) < 1e-13


@pytest.mark.parametrize("name", sorted(DIRK_TABLEAUS))
def test_dirk_tableau_matches_plain_scheme_and_order(name):
    """sdirk2/trbdf2 (PETSc ARKIMEX with pnode's tableau) equal a plain DIRK on the linear
    y' = lam y (each stage solved in closed form) to round-off, and converge at order 2."""
    tab, lam = DIRK_TABLEAUS[name], -3.0

    def plain(h, T=1.0):
        y = 1.0
        for _ in range(round(T / h)):
            Y = []
            for i, row in enumerate(tab.A):
                Y.append((y + h * lam * sum(row[j] * Y[j] for j in range(i))) / (1 - h * lam * row[i]))
            y = y + h * lam * sum(b * Yi for b, Yi in zip(tab.b, Y))
        return y
    ys = pnode.odeint(lambda t, y: lam * y, torch.tensor(1.0, dtype=torch.float64),
                      torch.tensor([0.0, 1.0], dtype=torch.float64), method=name, options={"step_size": 0.05})
    assert abs(float(ys[-1]) - plain(0.05)) < 1e-12
    e1, e2 = abs(plain(0.1) - math.exp(lam)), abs(plain(0.05) - math.exp(lam))
    assert math.log2(e1 / e2) > 1.8
    with pytest.raises(ValueError, match="func_explicit"):
        pnode.odeint(lambda t, y: lam * y, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 1.0]), method=name,
                     options={"step_size": 0.1, "func_explicit": lambda t, y: y})


def test_adaptive_tableaus_reach_their_tolerance():
    f = Sine()
    t = torch.tensor([1.0, 4.0], dtype=torch.float64)
    for name in ("tsit5", "dopri8", "fehlberg2", "adaptive_heun"):
        ys = pnode.odeint(f, f.exact(t[0]), t, method=name, rtol=1e-8, atol=1e-10)
        assert float(abs(ys[-1] / f.exact(t[1]) - 1)) < 1e-5, name


def test_unsupported_methods_name_alternatives():
    for name in UNSUPPORTED:
        with pytest.raises(ValueError, match="nearest|->") as err:
            pnode.odeint(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]), method=name)
        assert name in str(err.value)


# ---------------------------------------------------------------- options
def test_step_t_and_jump_t_are_step_boundaries_not_outputs():
    calls = []

    def jumpy(t, y):
        calls.append(float(t))
        return -0.5 * y if t < 0.5 else y ** 2
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    solver = pnode.ODESolver(jumpy, rtol=1e-6, atol=1e-6, options={"jump_t": torch.tensor([0.5]),
                                                                   "step_t": [0.25, 7.0]})
    ys = solver(y0, t)
    assert ys.shape == (2, 2)
    st = solver.step_times.tolist()
    assert 0.5 in st and 0.25 in st and max(st) == 1.0
    assert 0.5 not in calls  # evaluated one float to either side of the jump
    # the exact solution of the two pieces
    y_half = y0 * math.exp(-0.25)
    exact = y_half / (1 - 0.5 * y_half)
    assert float((ys[-1] - exact).abs().max()) < 1e-4
    with_jump = len(calls)
    calls.clear()
    pnode.odeint(jumpy, y0, t, rtol=1e-6, atol=1e-6)
    assert with_jump < len(calls)  # stepping onto the jump saves the rejected steps around it


@pytest.mark.parametrize("method", ["euler", "rk4", "implicit_euler", "crank_nicolson"])
def test_perturb_moves_evaluations_off_the_grid(method):
    seen = []

    def f(t, x):
        seen.append(t.item())
        return -x
    x0 = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for perturb in (True, False):
        seen.clear()
        xs = pnode.odeint(f, x0, t, method=method, options={"step_size": 0.5, "perturb": perturb})
        xs.sum().backward()
        on_grid = {0.0, 0.5, 1.0} & set(seen)
        assert (not on_grid) if perturb else on_grid


def test_grid_constructor_sets_the_steps():
    """torchdiffeq's test: Euler on x' = x over a grid of 10 equal steps gives 1.1^10, and
    the gradient is d(1.1^10 x0)/dx0."""
    x0 = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    xs = pnode.odeint(lambda t, x: x, x0, torch.tensor([0.0, 1.0], dtype=torch.float64), method="euler",
                      options={"grid_constructor": lambda f, y0, t: torch.linspace(0, 1, 11)})
    xs[1].backward()
    assert abs(float(xs[1]) - 1.1 ** 10) < 1e-12 and abs(float(x0.grad) - 1.1 ** 10) < 1e-12
    with pytest.raises(ValueError, match="start at t"):
        pnode.odeint(lambda t, x: x, x0, torch.tensor([0.0, 1.0]), method="euler",
                     options={"grid_constructor": lambda f, y0, t: torch.linspace(0, 2, 11)})


def test_min_and_max_step():
    lin = Linear()
    y0 = torch.ones(3, dtype=torch.float64)
    t = torch.tensor([0.0, 8.0], dtype=torch.float64)
    solver = pnode.ODESolver(lin, options={"max_step": 0.25})
    solver(y0, t)
    assert float(solver.step_times.diff().max()) <= 0.25 * (1 + 1e-12)
    solver = pnode.ODESolver(lin, options={"min_step": 2.0})
    solver(y0, t)
    assert float(solver.step_times.diff()[:-1].min()) >= 2.0 * (1 - 1e-12)
    with pytest.raises(ValueError, match="min_step"):
        pnode.ODESolver(lin, options={"min_step": 1.0, "max_step": 0.5})


def test_norm_choices():
    lin = Linear()
    y0 = torch.ones(3, dtype=torch.float64)
    t = torch.tensor([0.0, 5.0], dtype=torch.float64)
    steps = {}
    for norm in ("rms", "max"):
        solver = pnode.ODESolver(lin, rtol=1e-6, options={"norm": norm})
        solver(y0, t)
        steps[norm] = solver.stats["steps"]
    assert steps["max"] >= steps["rms"]  # the max norm is never smaller than the RMS
    with pytest.raises(ValueError, match="norm"):
        pnode.odeint(lin, y0, t, options={"norm": lambda x: x.abs().max()})


def test_dtype_and_interp_accepted():
    ys = pnode.odeint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), method="rk4",
                      options={"dtype": torch.float64, "interp": "cubic", "step_size": 0.1})
    assert abs(float(ys[-1, 0]) - math.exp(-1)) < 1e-6
    with pytest.raises(TypeError, match="dtype"):
        pnode.odeint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), options={"dtype": torch.int32})


# ---------------------------------------------------------------- callbacks
@pytest.mark.parametrize("method", ["rk4", "dopri5", "kencarp4"])
def test_step_callbacks(method):
    class F(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2).double()
            self.log = {}

        def forward(self, t, x):
            return torch.tanh(self.lin(x))

    f = F()
    names = ["callback_step", "callback_step_adjoint"]
    if METHODS[method].adaptive:
        names += ["callback_accept_step", "callback_reject_step", "callback_accept_step_adjoint"]
    for name in names:
        f.log[name] = []
        setattr(f, name, lambda t0, y0, dt, name=name: f.log[name].append((float(t0), float(dt))))
    x0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    solver = pnode.ODESolver(f, method=method, options=_opts(method, 0.1))
    solver(x0, torch.tensor([0.0, 1.0], dtype=torch.float64)).sum().backward()
    steps = solver.stats["steps"]
    if METHODS[method].adaptive:
        assert len(f.log["callback_accept_step"]) == steps
        assert len(f.log["callback_step"]) == steps + len(f.log["callback_reject_step"])
        assert len(f.log["callback_accept_step_adjoint"]) == steps
    else:
        assert steps == 10 and len(f.log["callback_step"]) == 10
        starts = [t for t, _ in f.log["callback_step"]]
        assert max(abs(a - b) for a, b in zip(starts, [0.1 * k for k in range(10)])) < 1e-12
    assert len(f.log["callback_step_adjoint"]) == steps


def test_accept_callback_on_fixed_steps_warns():
    g = Linear()
    g.callback_accept_step = lambda t0, y0, dt: None
    with pytest.warns(UserWarning, match="never accepted"):
        pnode.odeint(g, torch.ones(3, dtype=torch.float64), torch.tensor([0.0, 1.0]), method="rk4")


# ---------------------------------------------------------------- events
@pytest.mark.parametrize("method,options", [("dopri5", None), ("tsit5", None), ("rk4", {"step_size": 0.01}),
                                            ("kencarp4", None)])
@pytest.mark.parametrize("reverse", [False, True])
def test_event_time_and_its_gradient(method, options, reverse):
    """y' = a y from y0 until y = 1: t* = t0 + ln(1/y0)/a, with the analytic gradients of
    t* and of y(t*) = 1 (zero) with respect to a, y0 and t0."""
    sign = -1.0 if reverse else 1.0
    a = torch.tensor(-0.7 * sign, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    t0 = torch.tensor(0.25, dtype=torch.float64, requires_grad=True)
    t_ev, ys = pnode.odeint_event(lambda t, y: a * y, y0, t0, event_fn=lambda t, y: y.sum() - 1.0,
                                  reverse_time=reverse, method=method, options=options, rtol=1e-10, atol=1e-12)
    assert ys.shape == (2, 1) and float(ys[0].detach()) == 2.0
    exact = 0.25 + math.log(0.5) / float(a.detach())
    assert abs(float(t_ev.detach()) - exact) < 1e-8 and abs(float(ys[-1].detach()) - 1.0) < 1e-8
    ga, gy0, gt0 = torch.autograd.grad(t_ev, (a, y0, t0), retain_graph=True)
    av = float(a.detach())
    assert abs(float(ga) + math.log(0.5) / av ** 2) < 1e-6
    assert abs(float(gy0) + 1 / (av * 2.0)) < 1e-6
    assert abs(float(gt0) - 1.0) < 1e-6
    (gy,) = torch.autograd.grad(ys[-1].sum(), (y0,))  # y(t*) = 1 whatever y0
    assert abs(float(gy)) < 1e-6


def test_event_fn_through_odeint_and_errors():
    f = Sine()
    t = torch.linspace(1, 8, 10, dtype=torch.float64)
    sol = f.exact(t)
    t_ev, ys = pnode.odeint(f, sol[0], t[:2], event_fn=lambda s, y: y - sol[2])
    assert abs(float(t_ev) - float(t[2])) < 1e-6 and abs(float(ys[-1] / sol[2] - 1)) < 1e-6
    with pytest.raises(ValueError, match="step_size"):
        pnode.odeint(f, sol[0], t[:2], event_fn=lambda s, y: y - sol[2], method="rk4")
    with pytest.raises(pnode.SolverError, match="did not cross zero"):
        pnode.odeint(lambda t, y: -y, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 1.0]),
                     event_fn=lambda t, y: y.sum() + 1.0, options={"max_num_steps": 200})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pnode.odeint(lambda t, y: -y, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("terminal", [False, True])
def test_event_fn_with_a_constant_branch(terminal):
    """torchdiffeq's learn_physics.py: the event function is ``pos - r**2`` until a
    terminal time T and ``zeros_like(t)`` (no graph) after it. A falling ball
    (pos' = vel, vel' = -g) lands at t* = sqrt(2 (h - r^2) / g) with vel = -g t*; with
    T < t* the event is at T (to 1e-7) and does not move with the parameters. Gradients of
    t* and vel(t*) with respect to g, r, h against the analytic ones (to 1e-6)."""
    f64 = torch.float64
    g, r, h = (torch.tensor(v, dtype=f64, requires_grad=True) for v in (9.81, 0.5, 10.0))
    T = 0.5 if terminal else 5.0

    def event_fn(t, state):
        if t > T + 1e-7:
            return torch.zeros_like(t)
        return state[0].sum() - r ** 2

    state = (h.reshape(1), torch.zeros(1, dtype=f64))
    t_ev, sol = pnode.odeint_event(lambda t, s: (s[1], -g * torch.ones_like(s[1])), state, torch.tensor(0.0, dtype=f64),
                                   event_fn=event_fn, rtol=1e-10, atol=1e-12)
    vel = sol[1][-1].sum()
    gv, hv, rv = 9.81, 10.0, 0.5
    if terminal:
        want_t, want_dt = T + 1e-7, (0.0, 0.0, 0.0)
        want_dvel = (-want_t, 0.0, 0.0)
    else:
        want_t = math.sqrt(2 * (hv - rv ** 2) / gv)
        want_dt = (-want_t / (2 * gv), -2 * rv / (gv * want_t), 1 / (gv * want_t))  # d/dg, d/dr, d/dh
        want_dvel = (-want_t - gv * want_dt[0], -gv * want_dt[1], -gv * want_dt[2])
    assert abs(float(t_ev.detach()) - want_t) < 1e-6
    # at T the event time is a constant: no graph (torch's way of saying gradient 0)
    assert t_ev.requires_grad != terminal
    dt = (torch.autograd.grad(t_ev, (g, r, h), retain_graph=True, allow_unused=True) if t_ev.requires_grad
          else (None,) * 3)
    dvel = torch.autograd.grad(vel, (g, r, h), allow_unused=True)
    for got, want in zip(dt + dvel, want_dt + want_dvel):
        assert abs((0.0 if got is None else float(got)) - want) < 1e-6, (dt, dvel, want_dt, want_dvel)


# ---------------------------------------------------------------- odeint_dense
# torchdiffeq 0.2.5's odeint_dense(lambda t, y: a*y, y0=[1, 2], t0=0, t1=2, rtol=1e-7, atol=1e-9)
# with a = -0.7, evaluated at these times (computed with torchdiffeq in its own venv).
_TORCHDIFFEQ_DENSE = {0.3: [0.8105842142702459, 1.6211684285404917], 1.234: [0.421557114321581, 0.843114228643162],
                      1.9: [0.2644772621995155, 0.528954524399031]}


def test_odeint_dense_matches_the_solution_and_its_gradients():
    """odeint_dense on y' = a y: the interpolant passes through the solve's states at its
    steps, agrees with exp(a t) y0 between them (and with torchdiffeq's interpolant on the
    same problem), and its gradients with respect to y0, a and t_eval are the analytic ones."""
    f64 = torch.float64
    a = torch.tensor(-0.7, dtype=f64, requires_grad=True)
    y0 = torch.tensor([1.0, 2.0], dtype=f64, requires_grad=True)
    func = lambda t, y: a * y  # noqa: E731
    dense = pnode.odeint_dense(func, y0, torch.tensor(0.0, dtype=f64), torch.tensor(2.0, dtype=f64),
                               rtol=1e-7, atol=1e-9)
    assert len(dense.grid) > 3  # several steps, so the interpolation is exercised
    assert torch.equal(dense(torch.tensor(0.0, dtype=f64)), y0.detach())
    for s in dense.grid.tolist():  # through the solve's states at its steps (t1 included)
        assert float((dense(torch.tensor(s, dtype=f64)).detach() - y0.detach() * math.exp(-0.7 * s)).abs().max()) < 1e-6
    for t_eval, td in _TORCHDIFFEQ_DENSE.items():
        te = torch.tensor(t_eval, dtype=f64, requires_grad=True)
        y = dense(te)
        exact = y0.detach() * math.exp(-0.7 * t_eval)
        assert y.shape == (2,) and float((y.detach() - exact).abs().max()) < 1e-6
        assert float((y.detach() - torch.tensor(td, dtype=f64)).abs().max()) < 1e-6
        gy0, ga, gt = torch.autograd.grad(y[1], (y0, a, te), retain_graph=True)  # one graph for every t_eval
        e = math.exp(-0.7 * t_eval)
        assert abs(float(gy0[1]) - e) < 1e-6 and abs(float(gy0[0])) < 1e-12
        assert abs(float(ga) - 2.0 * t_eval * e) < 1e-6
        assert abs(float(gt) - (-0.7) * 2.0 * e) < 1e-5
    ys = dense(torch.tensor([0.5, 1.5], dtype=f64))
    assert ys.shape == (2, 2)
    with pytest.raises(ValueError, match="t_eval must lie between"):
        dense(torch.tensor(2.5, dtype=f64))
