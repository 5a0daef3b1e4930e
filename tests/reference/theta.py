"""Plain-torch theta method (PETSc TSTHETA) with a dense Newton solve, no PETSc.

Implements both of TSTHETA's forms over given step boundaries, optionally with a mass
matrix M (M y' = f(t, y)):

- endpoint form: M (y1 - y0) = h ((1 - theta) f(t0, y0) + theta f(t1, y1))
  (theta = 1 backward Euler, theta = 1/2 Crank-Nicolson / trapezoid);
- midpoint (stage) form: M (Y - y0) = theta h f(t0 + theta h, Y), then
  y1 = y0 + (Y - y0) / theta (theta = 1/2 the implicit midpoint rule).

Each implicit equation is solved by a dense Newton iteration converged to 1e-14, whose last
step carries the autograd graph, so backprop gives the exact discrete derivative.
"""
import torch


def newton(residual, guess, tol=1e-14, maxit=50):
    """Solve residual(x) = 0 densely; autograd sees only the last step (implicit
    function theorem: exact derivative at a converged root)."""
    x = guess.detach()
    for _ in range(maxit):
        r = residual(x)
        if r.abs().max() < tol:
            break
        flat = lambda z: residual(z.reshape(x.shape)).reshape(-1)  # noqa: E731
        jac = torch.autograd.functional.jacobian(flat, x.reshape(-1))
        x = (x.reshape(-1) - torch.linalg.solve(jac, r.reshape(-1).detach())).reshape(x.shape).detach()
    flat = lambda z: residual(z.reshape(x.shape)).reshape(-1)  # noqa: E731
    jac = torch.autograd.functional.jacobian(flat, x.reshape(-1)).detach()
    return (x.reshape(-1) - torch.linalg.solve(jac, residual(x).reshape(-1))).reshape(x.shape)


def theta_solve(func, y0, step_times, out_times, theta, endpoint, mass=None):
    """Plain-torch theta method (PETSc TSTHETA's two forms) through the given steps;
    returns the states at ``out_times`` stacked."""
    M = (lambda v: v @ mass.T) if mass is not None else (lambda v: v)
    y, st = y0, [float(x) for x in step_times]
    outs = {float(x) for x in out_times}
    res = [y] if st[0] in outs else []
    for t0, t1 in zip(st[:-1], st[1:]):
        h = t1 - t0
        tt = lambda s: torch.tensor(s, dtype=y0.dtype)  # noqa: E731
        if endpoint:
            f0 = func(tt(t0), y)
            y = newton(lambda z: M(z - y) - h * ((1 - theta) * f0 + theta * func(tt(t1), z)), y)
        else:  # stage Y at t0 + theta h, then extrapolate
            stage = newton(lambda z: M(z - y) - theta * h * func(tt(t0 + theta * h), z), y)
            y = y + (stage - y) / theta
        if t1 in outs:
            res.append(y)
    return torch.stack(res)
