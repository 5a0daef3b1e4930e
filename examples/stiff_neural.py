"""Train a stiff neural ODE with an IMEX method (kencarp4) and with dopri5, and compare.

The model is SINODE-style: a known, fixed, stiff linear part plus a learned MLP,

    dy/dt = A y + MLP(y),     A = Q diag(-lambda) Q^T,  lambda = logspace(0, 4, d),

with Q a random orthogonal matrix, so A's eigenvalues run from -1 down to -1e4. The data
are trajectories of a ground-truth system with the same structure (the same A and a fixed
random MLP), from a batch of random initial states.

The same model, from the same initial weights, is trained twice with the same optimiser:

- ``kencarp4`` (adaptive additive Runge-Kutta, IMEX): the stiff part ``A y`` is treated
  implicitly (``func``), the MLP explicitly (``options["func_explicit"]``). The step size
  follows the accuracy of the slow dynamics, not the fastest eigenvalue.
- ``dopri5`` on the whole right-hand side: its step is capped by stability near
  3.3/1e4, so it takes thousands of steps per solve whatever the tolerance.

Both get the gradient from PETSc's discrete adjoint, and the two gradients agree to the
solver tolerance, so the loss curves coincide; the table shows what each costs: steps per
solve, time per iteration, total time, final loss (also relative to the loss of the
model without its MLP, ``A y`` alone: what there is to learn).

How the implicit solves are done: the implicit part is linear, so each stage's Newton
iteration is one linear solve with ``shift*I - A``. We pass an exact inverse as the
``preconditioner`` hook, ``(shift*I - A)^-1 r = Q diag(1/(shift + lambda)) Q^T r``, from
the eigendecomposition computed once: GMRES then converges in one iteration (forward and
in the transposed adjoint solves), at the cost of two (batch x d) @ (d x d) products.
The alternatives are slower here: ``options={"jacobian": "dense"}`` builds the full
(batch*d)^2 Jacobian with torch.func.jacrev (batch*d reverse passes) and LU-factors it at
every Newton iteration; unpreconditioned matrix-free GMRES needs about as many Krylov
iterations as there are distinct eigenvalue clusters (~d) per solve.

Every PETSc option works on the command line (e.g. ``-ts_monitor``). Writes a PNG of the
loss curves (``--out``).
"""
import argparse
import sys
import time

import torch
from torch import nn


class StiffLinear(nn.Module):
    """The known stiff part ``A y`` with ``A = Q diag(-lam) Q^T`` (a fixed buffer)."""

    def __init__(self, Q, lam):
        super().__init__()
        self.register_buffer("Q", Q)
        self.register_buffer("lam", lam)
        self.register_buffer("A", -(Q * lam) @ Q.T)

    def forward(self, t, y):
        return y @ self.A.T

    def solve_shifted(self, t, y, shift, r, transpose):
        """``(shift*I - A)^-1 r`` exactly (A is symmetric, so the transpose is the same)."""
        return ((r @ self.Q) / (shift + self.lam)) @ self.Q.T


class MLP(nn.Module):
    """The learned (non-stiff) part: d -> hidden -> hidden -> d, tanh."""

    def __init__(self, d, hidden, gain=1.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, d)).double()
        with torch.no_grad():
            for m in self.net:
                if isinstance(m, nn.Linear):
                    m.weight.mul_(gain)

    def forward(self, t, y):
        return self.net(y)


class Full(nn.Module):
    """The whole right-hand side ``A y + MLP(y)`` (for explicit methods)."""

    def __init__(self, stiff, mlp):
        super().__init__()
        self.stiff, self.mlp = stiff, mlp

    def forward(self, t, y):
        return self.stiff(t, y) + self.mlp(t, y)


def make_solver(pnode, method, stiff, mlp, rtol, atol):
    if method == "dopri5":
        return pnode.ODESolver(Full(stiff, mlp), method="dopri5", rtol=rtol, atol=atol)
    # IMEX: func = stiff linear part (implicit), func_explicit = the MLP (explicit). The
    # solver differentiates the parameters of both (here only the MLP has any).
    return pnode.ODESolver(stiff, method=method, rtol=rtol, atol=atol,
                           options={"func_explicit": mlp, "preconditioner": stiff.solve_shifted})


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Unrecognised -options are passed to PETSc.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--iters", type=int, default=8, help="Adam iterations per method")
    p.add_argument("--dim", type=int, default=8, help="state dimension d")
    p.add_argument("--hidden", type=int, default=32, help="MLP width")
    p.add_argument("--batch", type=int, default=32, help="trajectories (initial states)")
    p.add_argument("--stiffness", type=float, default=1e4, help="largest |eigenvalue| of A")
    p.add_argument("--t-end", type=float, default=0.5, help="trajectories cover [0, t_end]")
    p.add_argument("--points", type=int, default=6, help="output times (incl. t=0)")
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-7)
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    p.add_argument("--methods", nargs="+", default=["kencarp4", "dopri5"],
                   help="methods to train with (kencarp3/4/5 use the IMEX split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default="stiff_neural.png", help="PNG of the loss curves ('' for none)")
    return p.parse_known_args(argv)


def main(argv=None):
    args, petsc_args = parse_args(argv)
    sys.argv = sys.argv[:1] + petsc_args  # PETSc reads sys.argv when pnode is first imported
    import pnode

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    d = args.dim
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    lam = torch.logspace(0, torch.log10(torch.tensor(args.stiffness)).item(), d, dtype=torch.float64)
    stiff = StiffLinear(Q, lam)
    torch.manual_seed(args.seed + 1)
    true_mlp = MLP(d, args.hidden, gain=2.0)        # ground-truth non-stiff dynamics
    for p_ in true_mlp.parameters():
        p_.requires_grad_(False)
    y0 = torch.randn(args.batch, d, generator=gen, dtype=torch.float64)
    t = torch.linspace(0.0, args.t_end, args.points, dtype=torch.float64)
    with torch.no_grad():
        ref = make_solver(pnode, "kencarp5", stiff, true_mlp, 1e-9, 1e-11)
        data = ref(y0, t)
        ref.close()
        # the loss of the model without its MLP (A y only): the scale of what is to learn
        base_solver = make_solver(pnode, "kencarp4", stiff, MLP(d, args.hidden, gain=0.0), args.rtol, args.atol)
        base = (base_solver(y0, t) - data).pow(2).mean().item()
        base_solver.close()

    torch.manual_seed(args.seed + 2)
    init = MLP(d, args.hidden, gain=0.5).state_dict()

    try:
        from tqdm import trange
    except ImportError:  # pragma: no cover - tqdm is in the examples extra
        trange = None
    results = {}
    for method in args.methods:
        mlp = MLP(d, args.hidden)
        mlp.load_state_dict(init)
        solver = make_solver(pnode, method, stiff, mlp, args.rtol, args.atol)
        opt = torch.optim.Adam(mlp.parameters(), lr=args.lr)
        history, steps = [], []
        its = trange(args.iters, desc=f"{method:>8}", disable=None) if trange else range(args.iters)
        start = time.perf_counter()
        for _ in its:
            opt.zero_grad()
            loss = (solver(y0, t) - data).pow(2).mean()
            loss.backward()
            opt.step()
            history.append(loss.item())
            steps.append(solver.stats["steps"])
            if hasattr(its, "set_postfix"):
                its.set_postfix(loss=f"{history[-1]:.3e}", steps=steps[-1])
        elapsed = time.perf_counter() - start
        with torch.no_grad():
            final = (solver(y0, t) - data).pow(2).mean().item()
        results[method] = dict(history=history, steps=sum(steps) / max(len(steps), 1), time=elapsed,
                               final=final, rhs=solver.stats["rhs_evals"])
        solver.close()

    print()
    print(f"stiff neural ODE: d={d}, eigenvalues of A in [-{args.stiffness:g}, -1], batch {args.batch}, "
          f"t in [0, {args.t_end:g}], rtol {args.rtol:g}, {args.iters} Adam iterations")
    print(f"loss of the model without MLP (A y only): {base:.4e}")
    print(f"| {'method':<9} | {'steps/solve':>11} | {'s/iteration':>11} | {'total s':>8} | {'final loss':>11} "
          f"| {'loss / A-only':>13} |")
    print(f"|{'-' * 11}|{'-' * 13}|{'-' * 13}|{'-' * 10}|{'-' * 13}|{'-' * 15}|")
    for method, r in results.items():
        per = r["time"] / max(args.iters, 1)
        print(f"| {method:<9} | {r['steps']:>11.0f} | {per:>11.2f} | {r['time']:>8.1f} | {r['final']:>11.4e} "
              f"| {r['final'] / base:>13.3f} |")
    if len(results) >= 2:
        names = list(results)
        a, b = results[names[0]], results[names[1]]
        if b["steps"] and a["steps"]:
            print(f"{names[1]} takes {b['steps'] / a['steps']:.0f}x the steps of {names[0]} and "
                  f"{b['time'] / max(a['time'], 1e-9):.1f}x the time; the losses agree to "
                  f"{max(abs(x - y) / abs(y) for x, y in zip(a['history'], b['history'])):.1e} (relative).")

    if args.out:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        styles = ["o-", "x--", "s:", "d-."]
        for (method, r), st in zip(results.items(), styles):
            ax.semilogy(range(1, len(r["history"]) + 1), [h / base for h in r["history"]], st, ms=4,
                        label=f"{method}: {r['steps']:.0f} steps/solve, {r['time']:.0f} s")
        ax.set_xlabel("Adam iteration")
        ax.set_ylabel("training loss / loss of A y alone")
        ax.set_title(f"stiff neural ODE (eigenvalues to -{args.stiffness:g})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.out, dpi=100)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
