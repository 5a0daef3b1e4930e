"""diffrax's KenCarp4 on benchmarks/stiff_pde.py's KS model, same weights and data (a worker).

Runs under an interpreter that has JAX and diffrax (not necessarily pnode's): reads the
weights and data the torch side saved (``.npz``: ``w0`` the kernel-5 circular convolution,
``W1, b1, ..., W5, b5`` the MLP, ``u0``, ``u1``, ``interval``, ``step``) and differentiates
the same loss (mean squared error at ``interval``) with diffrax's default
``RecursiveCheckpointAdjoint``, jit-compiled, float64, one XLA thread. Returns
(benchmarks/_harness.py's worker protocol) the wall time of ``repeats`` gradient evaluations
after the compiling one, the loss, and the gradient flattened in torch's parameter order.

Configuration (what a diffrax user would choose for this problem):

- ``diffrax.KenCarp4`` on a ``MultiTerm`` (the MLP explicit, the convolution implicit), the
  same fixed step as pnode (``ConstantStepSize``, ``max_steps`` the step count + 1);
- root finder ``VeryChord(rtol=1e-10, atol=1e-10)``: diffrax's default for its implicit
  solvers, which takes its tolerances from an adaptive step-size controller; with
  ``ConstantStepSize`` they are given here, tight, so that the stage solves are as exact as
  pnode's. The implicit part is linear, so the chord step with the exact Jacobian
  (dense, per sample, LU-factored: lineax's default linear solver) is the exact stage
  solve; the tolerances only decide that it has converged;
- the batch mapped with ``jax.lax.map`` (one sample's solve after another), not
  ``jax.vmap``. Under ``jax.vmap`` every Jacobian LU is one *batched* LAPACK ``getrf``
  custom call, and jaxlib 0.10.2's CPU kernel splits a large enough batch into chunks
  scheduled on XLA's intra-op thread pool and blocks the calling pool thread until they
  finish. When the thunk executor runs as many such LUs at once as the pool has threads
  (2 on a 2-core machine), every pool thread is waiting and the chunks never run: the
  process deadlocks (native stacks: ``lapack_dgetrf_ffi`` -> ``ParallelBatchMap`` ->
  ``BlockingCounter::Wait`` on every pool thread, the main thread in ``BlockUntilReady``).
  At N = 64 the vmapped gradient hung within the first few calls (at N = 16 and 512 it had
  finished, by luck: four independent vmapped ``jnp.linalg.solve`` of 256 16 x 16 matrices in
  one jitted function hang the same way). A batch of one is never split, so ``lax.map``
  cannot deadlock; it gives the same loss and gradient (to round-off).

    python benchmarks/_diffrax_pde.py WEIGHTS.npz --repeats 3
"""
import argparse
import json
import os
import sys
import time

from _harness import serve  # benchmarks/ is on sys.path; standard library only

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")  # one thread, like the torch rows


def kencarp4_step(weights, repeats=3):
    """Wall times, loss and gradient of diffrax's KenCarp4 training step on ``weights``."""
    import diffrax
    import jax
    import jax.numpy as jnp
    import numpy as np
    jax.config.update("jax_enable_x64", True)
    data = np.load(weights)
    layers = sorted(int(k[1:]) for k in data.files if k.startswith("W"))
    params = (jnp.asarray(data["w0"]),) + tuple(x for i in layers
                                                 for x in (jnp.asarray(data[f"W{i}"]), jnp.asarray(data[f"b{i}"])))
    u0, u1 = jnp.asarray(data["u0"]), jnp.asarray(data["u1"])
    interval, step = float(data["interval"]), float(data["step"])

    def implicit(t, y, p):  # torch's circular Conv1d (cross-correlation), kernel 5
        w = p[0]
        return sum(w[k] * jnp.roll(y, 2 - k) for k in range(5))

    def explicit(t, y, p):
        h = y
        for i in range(1, len(p) - 2, 2):
            h = jax.nn.relu(h @ p[i].T + p[i + 1])
        return -(h @ p[-2].T + p[-1])

    terms = diffrax.MultiTerm(diffrax.ODETerm(explicit), diffrax.ODETerm(implicit))
    solver = diffrax.KenCarp4(root_finder=diffrax.VeryChord(rtol=1e-10, atol=1e-10))
    nsteps = round(interval / step)

    def one(y0, p):
        sol = diffrax.diffeqsolve(terms, solver, t0=0.0, t1=interval, dt0=step, y0=y0, args=p,
                                  stepsize_controller=diffrax.ConstantStepSize(),
                                  saveat=diffrax.SaveAt(t1=True), max_steps=nsteps + 1)
        return sol.ys[-1]

    def loss(p):  # lax.map, not vmap: see the module docstring (a jaxlib deadlock)
        return jnp.mean((jax.lax.map(lambda y0: one(y0, p), u0) - u1) ** 2)
    step_fn = jax.jit(jax.value_and_grad(loss))
    value, grads = jax.block_until_ready(step_fn(params))  # compiles
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(step_fn(params))
        times.append(time.perf_counter() - start)
    flat = np.concatenate([np.asarray(g).reshape(-1) for g in grads])
    return dict(times=times, loss=float(value), grad=flat.tolist(), steps=nsteps, jax=jax.__version__,
                diffrax=diffrax.__version__)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", nargs="?")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return serve(args.worker, kencarp4_step)
    if not args.weights:
        p.error("the weights file (.npz) is required")
    r = kencarp4_step(args.weights, args.repeats)
    print(json.dumps({k: v for k, v in r.items() if k != "grad"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
