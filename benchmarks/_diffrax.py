"""diffrax's training step on benchmarks/graphs.py's MLP case, same weights (a worker).

Runs under an interpreter that has JAX and diffrax (not necessarily pnode's): reads the
weights and initial state that the torch side saved (``.npz``), integrates the same MLP
field with ``diffrax.Dopri5`` on the same 100 fixed steps, differentiates mean(y(1)^2)
with diffrax's default adjoint (``RecursiveCheckpointAdjoint``), jit-compiled, float64,
one XLA thread. Returns (through benchmarks/_harness.py's worker protocol; printed as one
JSON line when run by hand) the median CPU time of ``repeats`` steps after the compiling
one, and the gradients' absolute sums (to compare with the torch rows).

    python benchmarks/_diffrax.py WEIGHTS.npz --repeats 5
"""
import argparse
import json
import os
import statistics
import sys
import time

from _harness import serve  # benchmarks/ is on sys.path; standard library only

# one XLA thread: the torch rows run on one thread too
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")


def diffrax_step(weights, repeats=5, steps=100):
    """CPU time (median of ``repeats``) and gradient sums of diffrax's training step on the
    MLP saved in ``weights`` (.npz), ``steps`` fixed Dopri5 steps over [0, 1]."""
    import diffrax
    import jax
    import jax.numpy as jnp
    import numpy as np
    jax.config.update("jax_enable_x64", True)
    data = np.load(weights)
    params = tuple(jnp.asarray(data[k]) for k in ("w1", "b1", "w2", "b2"))
    y0 = jnp.asarray(data["y0"])

    def field(t, y, p):
        w1, b1, w2, b2 = p
        return jnp.tanh(y @ w1.T + b1) @ w2.T + b2

    def loss(p):
        sol = diffrax.diffeqsolve(diffrax.ODETerm(field), diffrax.Dopri5(), t0=0.0, t1=1.0,
                                  dt0=1.0 / steps, y0=y0, args=p,
                                  stepsize_controller=diffrax.ConstantStepSize(),
                                  saveat=diffrax.SaveAt(t1=True), max_steps=steps + 1)
        return jnp.mean(sol.ys[-1] ** 2)
    step = jax.jit(jax.grad(loss))
    jax.block_until_ready(step(params))  # compiles
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        g = jax.block_until_ready(step(params))
        times.append(time.process_time() - t0)
    return dict(cpu_s=statistics.median(times), cpu_all=times, grad=[float(jnp.abs(x).sum()) for x in g],
                jax=jax.__version__, diffrax=diffrax.__version__)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", nargs="?")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return serve(args.worker, diffrax_step)
    if not args.weights:
        p.error("the weights file (.npz) is required")
    print(json.dumps(diffrax_step(args.weights, args.repeats, args.steps)))


if __name__ == "__main__":
    sys.exit(main())
