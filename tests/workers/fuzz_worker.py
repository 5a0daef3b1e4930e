"""Input fuzzing, run in its own process by tests/test_faults.py: every combination of
state shape, dtype, time grid, method and option value either gives the exact solution
of y' = -y (to the method's accuracy, 1e-4 relative) or raises a clear error (ValueError,
TypeError, pnode.SolverError). Anything else, a crash or a hang fails the test.
Prints ``cases=N clear=M`` at the end."""
import itertools
import math

import torch

import pnode

SHAPES = [(), (0,), (3,), (2, 3), "tuple"]
DTYPES = [torch.float64, torch.float32, torch.int64, torch.complex128, torch.float16]
TIMES = [
    [0.0, 1.0], [0.0, 0.5, 1.0], [1.0, 0.0], [2.0], [0.0, 0.0], [0.0, 1.0, 0.5], [], [[0.0, 1.0]],
    [0.0, float("nan")], [0.0, float("inf")], torch.tensor([0.0, 1.0], dtype=torch.float32), "abc", None,
    [1e6, 1e6 + 1.0],
]
METHODS = ["dopri5", "rk4", "kencarp4", "crank_nicolson", "nosuch", 5]
OPTIONS = [None, {"step_size": 0.1}, {"step_size": -1.0}, {"step_size": float("nan")}, {"first_step": 0.0},
           {"max_num_steps": 0}, {"max_num_steps": 3}, {"bogus": 1}, "notadict", {"step_size": 1e-300}]
# adaptive methods meet rtol; fixed ones without a step size take one step per interval
TOL = {"dopri5": 1e-6, "kencarp4": 1e-5, "rk4": 2e-2, "crank_nicolson": 0.2}
CLEAR = (ValueError, TypeError, pnode.SolverError)


def make_y0(shape, dtype):
    if shape == "tuple":
        return (torch.ones(2).to(dtype), torch.full((3,), 2.0).to(dtype))
    return torch.ones(shape).to(dtype)


def expected(y0, times):
    t = [float(x) for x in times]
    decay = torch.tensor([math.exp(-(x - t[0])) for x in t], dtype=torch.float64)
    if isinstance(y0, tuple):
        return tuple(decay.reshape(-1, *([1] * m.dim())) * m.double() for m in y0)
    return decay.reshape(-1, *([1] * y0.dim())) * y0.double()


def check(y0, times, method, options):
    try:
        ys = pnode.odeint(lambda t, y: tuple(-m for m in y) if isinstance(y, tuple) else -y, y0, times,
                          method=method, options=options, rtol=1e-8, atol=1e-10)
    except CLEAR:
        return "clear"
    want = expected(y0, times)
    pairs = zip(ys, want) if isinstance(ys, tuple) else [(ys, want)]
    for got, ref in pairs:
        assert got.shape == ref.shape and got.dtype == y0_dtype(y0), (got.shape, ref.shape, got.dtype)
        err = float((got.double() - ref).abs().max()) if got.numel() else 0.0
        tol = TOL[method] if options is None or "step_size" not in options else 1e-3
        assert err <= tol * max(1.0, float(ref.abs().max()) if ref.numel() else 1.0), err
    return "ok"


def y0_dtype(y0):
    return y0[0].dtype if isinstance(y0, tuple) else y0.dtype


def main():
    counts = {"ok": 0, "clear": 0}
    cases = list(itertools.product(SHAPES, DTYPES, TIMES, METHODS, OPTIONS))
    # every shape x dtype x times combination, and every method x options one, without the
    # full product (which would take minutes)
    cases = [c for i, c in enumerate(cases) if i % 7 == 0 or (c[3] == "dopri5" and c[4] is None)]
    for shape, dtype, times, method, options in cases:
        y0 = make_y0(shape, dtype)
        try:
            counts[check(y0, times, method, options)] += 1
        except AssertionError as e:
            raise AssertionError(f"wrong result for shape={shape} dtype={dtype} t={times} method={method} "
                                 f"options={options}: {e}") from None
        except Exception as e:
            raise AssertionError(f"unclear {type(e).__name__} for shape={shape} dtype={dtype} t={times} "
                                 f"method={method} options={options}: {e}") from e
    print(f"cases={len(cases)} clear={counts['clear']} ok={counts['ok']}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
