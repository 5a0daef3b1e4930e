"""Plain-torch explicit Runge-Kutta references (no PETSc in the arithmetic).

``rk_tableau`` reads the Butcher tableau of one of PETSc's RK schemes from PETSc itself
(``TSRKGetTableau`` through ctypes) and ``rk_solve`` integrates with it in plain torch over
given step boundaries, so the tests check pnode's bridge and adjoint against autograd
through a separate, plain implementation of the very same scheme. ``rk4`` is the classical
fixed-step RK4 written out, for tuple states.
"""
import torch
from petsc4py import PETSc

from pnode.clib import rk_tableau as petsc_rk_tableau  # PETSc's numbers; the arithmetic below is plain torch


def rk_tableau(rk_type):
    """(A, b, c) of PETSc's RK tableau ``rk_type`` as float64 tensors."""
    ts = PETSc.TS().create(comm=PETSc.COMM_SELF)
    try:
        ts.setType("rk")
        ts.setRKType(rk_type)
        A, b, c, _ = petsc_rk_tableau(ts)
        n = len(b)
        f64 = dict(dtype=torch.float64)
        return torch.tensor(A, **f64).reshape(n, n), torch.tensor(b, **f64), torch.tensor(c, **f64)
    finally:
        ts.destroy()


def rk_solve(func, y0, step_times, out_times, tableau):
    """Explicit RK with Butcher tableau ``(A, b, c)`` through the given step boundaries
    (stages k_i = f(t0 + c_i h, y + h sum_j A_ij k_j), y1 = y + h sum_i b_i k_i);
    returns the states at ``out_times``.

    ``y0`` may be a tuple (then ``func`` takes and returns tuples).
    """
    A, b, c = tableau
    is_tuple = isinstance(y0, tuple)
    y = y0 if is_tuple else (y0,)

    def f(t, state):
        out = func(t, state if is_tuple else state[0])
        return out if is_tuple else (out,)

    def axpy(state, coeffs, ks, h):
        res = []
        for m in range(len(state)):
            acc = state[m]
            for a, k in zip(coeffs, ks):
                if a != 0:
                    acc = acc + h * float(a) * k[m]
            res.append(acc)
        return tuple(res)

    st = [float(x) for x in step_times]
    outs = {float(x) for x in out_times}
    result = [y] if st[0] in outs else []
    for t0, t1 in zip(st[:-1], st[1:]):
        h = t1 - t0
        ks = []
        for i in range(len(b)):
            yi = axpy(y, A[i, :i].tolist(), ks, h)
            ks.append(f(torch.tensor(t0 + float(c[i]) * h, dtype=y[0].dtype), yi))
        y = axpy(y, b.tolist(), ks, h)
        if t1 in outs:
            result.append(y)
    assert len(result) == len(out_times), (len(result), len(out_times))
    stacked = tuple(torch.stack([r[m] for r in result]) for m in range(len(y)))
    return stacked if is_tuple else stacked[0]


def rk4(func, state, t0, t1, steps, dtype=torch.float64):
    """Classical RK4 (1/6, 1/3, 1/3, 1/6) on a tuple state with ``steps`` equal steps from
    ``t0`` to ``t1``, in plain torch (differentiable by backprop); returns the final state."""
    h = (t1 - t0) / steps
    y = tuple(state)
    for k in range(steps):
        t = torch.tensor(t0 + k * h, dtype=dtype)
        k1 = func(t, y)
        k2 = func(t + h / 2, tuple(a + h / 2 * b for a, b in zip(y, k1)))
        k3 = func(t + h / 2, tuple(a + h / 2 * b for a, b in zip(y, k2)))
        k4 = func(t + h, tuple(a + h * b for a, b in zip(y, k3)))
        y = tuple(a + h / 6 * (b1 + 2 * b2 + 2 * b3 + b4) for a, b1, b2, b3, b4 in zip(y, k1, k2, k3, k4))
    return y
