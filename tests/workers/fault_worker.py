"""Fault injection, run in its own process by tests/test_faults.py (a crash or hang is a
failed test, not a lost test run).

For one solver configuration: the clean loss and gradients of a fresh solver are the
reference; then every fault (a callback kind raising at its first call, mid-solve, and
in the backward pass) is injected into one and the same solver, the user's exception
must come back unchanged, and the next clean call on that solver must reproduce the
reference to 1e-12 (relative). Prints one line per fault and ``cases=N`` at the end.

Usage: python fault_worker.py CONFIG
"""
import sys

import torch
from torch import nn

import pnode


class Boom(Exception):
    pass


def kind_of(y):
    """Which callback is evaluating the field: a dense Jacobian or a forward-mode product
    (functorch-wrapped input: jvp), a graph build for the products at a linearization
    point (vjp), or a plain right-hand side (rhs)."""
    if torch._C._functorch.is_functorch_wrapped_tensor(y):
        return "jvp"
    if torch.is_grad_enabled() and y.requires_grad:
        return "vjp"
    return "rhs"


class Faulty(nn.Module):
    """A small stiff-ish MLP field that raises Boom at the ``at``-th call of ``kind``
    during ``phase`` ("forward" or "backward") once armed."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(torch.randn(8, 3, generator=g, dtype=torch.float64) * 0.5)
        self.w2 = nn.Parameter(torch.randn(3, 8, generator=g, dtype=torch.float64) * 0.5)
        self.disarm()
        self.phase = "forward"

    def arm(self, kind, at, phase):
        self.fault, self.calls, self.fired = (kind, at, phase), 0, False

    def disarm(self):
        self.fault, self.calls, self.fired = None, 0, False

    def forward(self, t, y):
        if self.fault is not None:
            kind, at, phase = self.fault
            if phase == self.phase and kind_of(y) == kind:
                self.calls += 1
                if self.calls == at:
                    self.fired = True
                    raise Boom(f"{kind}#{at} in {phase}")
        return torch.tanh(y @ self.w1.T) @ self.w2.T - 2.0 * y


class FaultyPC:
    """A Jacobi-like preconditioner for ``shift*I - J`` that can raise like the field."""

    def __init__(self):
        self.fault, self.calls, self.fired, self.phase = None, 0, False, "forward"

    def __call__(self, t, y, shift, r, transpose):
        if self.fault is not None and self.fault[2] == self.phase:
            self.calls += 1
            if self.calls == self.fault[1]:
                self.fired = True
                raise Boom(f"pc#{self.fault[1]} in {self.phase}")
        return r / (shift + 2.0)


def configs(field, pc):
    return {
        "explicit": dict(method="dopri5", rtol=1e-7, atol=1e-9),
        "explicit-all": dict(method="dopri5", rtol=1e-7, atol=1e-9, checkpoint="all"),
        "revolve": dict(method="rk4", options={"step_size": 0.05}, checkpoint=pnode.Checkpoint("binomial", max_ram=3)),
        "replay": dict(method="dopri5", rtol=1e-7, atol=1e-9, checkpoint=pnode.Checkpoint("binomial", max_ram=3)),
        "implicit": dict(method="crank_nicolson", options={"step_size": 0.1}),
        "imex": dict(method="kencarp4", rtol=1e-6, atol=1e-8, options={"func_explicit": lambda t, y: 0.1 * torch.sin(y)}),
        "dense": dict(method="implicit_euler", options={"step_size": 0.1, "jacobian": "dense"}),
        "preconditioned": dict(method="implicit_euler", options={"step_size": 0.1, "preconditioner": pc}),
    }


FAULTS = {
    # the default keeps the forward's stage graphs: func is evaluated with a graph in the
    # forward (after the first step's two plain evaluations) and not at all in the adjoint
    "explicit": [("rhs", 1, "forward"), ("rhs", 2, "forward"), ("vjp", 1, "forward"),
                 ("vjp", 9, "forward"), ("vjp", 30, "forward")],
    "explicit-all": [("rhs", 1, "forward"), ("rhs", 2, "forward"), ("rhs", 7, "forward"),
                     ("vjp", 1, "backward"), ("vjp", 9, "backward")],
    "revolve": [("rhs", 1, "forward"), ("rhs", 11, "forward"), ("vjp", 1, "backward"),
                ("vjp", 13, "backward"), ("rhs", 3, "backward")],
    "replay": [("rhs", 1, "forward"), ("rhs", 9, "forward"), ("vjp", 1, "backward"),
               ("vjp", 10, "backward"), ("rhs", 1, "backward"), ("rhs", 12, "backward")],
    # implicit methods build a graph per linearization point for their Jacobian products
    # (and block Jacobians) already in the forward pass: "vjp" faults there too
    "implicit": [("rhs", 1, "forward"), ("vjp", 1, "forward"), ("vjp", 6, "forward"),
                 ("vjp", 1, "backward"), ("vjp", 8, "backward")],
    "imex": [("rhs", 1, "forward"), ("rhs", 2, "forward"), ("vjp", 3, "forward"),
             ("vjp", 1, "backward"), ("vjp", 11, "backward")],
    "dense": [("rhs", 1, "forward"), ("jvp", 1, "forward"), ("jvp", 4, "forward"),
              ("vjp", 1, "backward"), ("vjp", 5, "backward")],
    "preconditioned": [("pc", 1, "forward"), ("pc", 9, "forward"), ("pc", 1, "backward"),
                       ("pc", 4, "backward"), ("vjp", 2, "forward")],
}

Y0 = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(4, 3)
T = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)


def run(solver, field, pc):
    """Loss and gradients (w.r.t. y0 and the parameters) of one clean call."""
    field.phase = pc.phase = "forward"
    y0 = Y0.clone().requires_grad_(True)
    ys = solver(y0, T)
    loss = (ys ** 2).sum() + ys[1].sum()
    field.phase = pc.phase = "backward"
    grads = torch.autograd.grad(loss, [y0, field.w1, field.w2])
    field.phase = pc.phase = "forward"
    return torch.cat([loss.detach().reshape(1)] + [g.reshape(-1) for g in grads])


def main(name):
    field, pc = Faulty(), FaultyPC()
    reference = run(pnode.ODESolver(field, **configs(field, pc)[name]), field, pc)
    solver = pnode.ODESolver(field, **configs(field, pc)[name])
    run(solver, field, pc)  # warm: the faults hit a solver that has run before
    for kind, at, phase in FAULTS[name]:
        target = pc if kind == "pc" else field
        target.fault, target.calls, target.fired = (kind, at, phase), 0, False
        try:
            run(solver, field, pc)
        except Boom:
            pass
        else:
            raise AssertionError(f"{name}: fault {kind}#{at} in {phase} never fired (calls={target.calls})")
        assert target.fired
        target.fault = None
        again = run(solver, field, pc)
        err = float((again - reference).norm() / reference.norm())
        assert err <= 1e-12, f"{name}: after fault {kind}#{at} in {phase} the clean call differs by {err:.3g}"
        print(f"{name} {kind}#{at} {phase}: raised, clean call differs by {err:.1e}", flush=True)
    print(f"cases={len(FAULTS[name])}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1])
