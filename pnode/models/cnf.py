"""Continuous normalizing flows (FFJORD) trained with PETSc's discrete adjoint.

A CNF transports data ``x`` to a base sample ``z ~ N(0, I)`` along ``dz/dt = f(t, z)``.
The log-density changes by the divergence of ``f`` (instantaneous change of variables):

    d log p(z(t)) / dt = -tr(df/dz).

**Convention (FFJORD's).** Data lives at ``t = 0`` and the base distribution at ``t = T``.
:meth:`CNF.log_prob` integrates the augmented state ``(z, delta_logp)`` forwards from
``(x, 0)`` at ``t = 0`` to ``t = T``, where ``delta_logp(T) = -int_0^T tr(df/dz) dt``, and
returns ``log p(x) = log N(z(T); 0, I) - delta_logp(T)``. :meth:`CNF.sample` integrates
``z ~ N(0, I)`` backwards from ``t = T`` to ``t = 0``.

**Trace.** ``trace="exact"`` loops over the ``d`` dimensions with autograd (``d`` backward
passes; right for small ``d``); ``trace="hutchinson"`` uses the unbiased estimate
``eps^T (df/dz) eps`` with Gaussian or Rademacher ``eps`` (one backward pass). The noise
is drawn once per solve (fixed along the trajectory, as the adjoint needs) from the CNF's
own seeded generator, for the *global* batch, and each MPI rank takes its rows: one and
two ranks see the same noise and give the same results.

**Regularisation (RNODE).** With ``return_reg=True`` two more accumulators ride along:
the kinetic energy ``int_0^T |f|^2 dt`` and the Jacobian Frobenius norm
``int_0^T |df/dz|_F^2 dt`` (exactly with the exact trace, as ``|eps^T df/dz|^2`` with
Hutchinson), weighted by ``kinetic_weight`` and ``jacobian_weight``.

**Autograd.** The vector field contains a derivative, so the adjoint differentiates it
twice. pnode evaluates ``func`` under ``torch.no_grad()`` in the forward solve (the
divergence is then computed under a local ``torch.enable_grad()`` and detached) and with
a graph in the backward pass (the divergence is computed with ``create_graph=True``).
Use explicit methods (``dopri5`` by default): implicit ones would need forward-mode
products through the divergence.
"""
import math

import torch
from torch import nn

from ..parallel import as_mpi4py
from ..solver import ODESolver

__all__ = ["CNF", "CNFDynamics", "ODENet", "ConcatSquashLinear", "ConcatLinear", "exact_divergence",
           "hutchinson_divergence", "standard_normal_logprob"]

_ACTIVATIONS = {"tanh": nn.Tanh, "softplus": nn.Softplus, "silu": nn.SiLU, "swish": nn.SiLU}


def standard_normal_logprob(z):
    """``log N(z; 0, I)`` per row.

    Args:
        z: ``(n, d)``.

    Returns:
        ``(n,)``.
    """
    d = z.shape[-1]
    return -0.5 * d * math.log(2 * math.pi) - 0.5 * z.pow(2).sum(-1)


class ConcatSquashLinear(nn.Module):
    """FFJORD's time-conditioned linear layer:
    ``y = (W x + b) * sigmoid(a t + c) + w t``.

    Args:
        dim_in, dim_out: feature sizes.

    ``forward(t, x)``: ``t`` a 0-d tensor, ``x`` ``(n, dim_in)`` -> ``(n, dim_out)``.
    """

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.layer = nn.Linear(dim_in, dim_out)
        self.hyper_gate = nn.Linear(1, dim_out)
        self.hyper_bias = nn.Linear(1, dim_out, bias=False)

    def forward(self, t, x):
        tt = t.reshape(1, 1).to(x.dtype)
        return self.layer(x) * torch.sigmoid(self.hyper_gate(tt)) + self.hyper_bias(tt)


class ConcatLinear(nn.Module):
    """Linear layer on ``[x, t]`` (time appended as one more input feature).

    ``forward(t, x)``: ``t`` a 0-d tensor, ``x`` ``(n, dim_in)`` -> ``(n, dim_out)``.
    """

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.layer = nn.Linear(dim_in + 1, dim_out)

    def forward(self, t, x):
        tt = t.to(x.dtype).expand(x.shape[0], 1)
        return self.layer(torch.cat([x, tt], dim=1))


class ODENet(nn.Module):
    """Time-dependent MLP vector field ``f(t, z)`` acting row-wise on a batch.

    Args:
        dim: data dimension ``d``.
        hidden: hidden widths, e.g. ``(64, 64, 64)``.
        activation: ``"tanh"``, ``"softplus"`` or ``"silu"`` (smooth: the CNF's adjoint
            differentiates the field twice).
        layer: ``"concatsquash"`` (FFJORD's default) or ``"concat"``.

    ``forward(t, z)``: ``t`` a 0-d tensor, ``z`` ``(n, d)`` -> ``(n, d)``. No coupling
    across rows, as exact MPI data parallelism requires.
    """

    def __init__(self, dim, hidden=(64, 64, 64), activation="tanh", layer="concatsquash"):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        layers = {"concatsquash": ConcatSquashLinear, "concat": ConcatLinear}
        if layer not in layers:
            raise ValueError(f"layer must be 'concatsquash' or 'concat', got {layer!r}")
        widths = [dim, *hidden, dim]
        self.layers = nn.ModuleList(layers[layer](a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.act = _ACTIVATIONS[activation]()

    def forward(self, t, z):
        h = z
        for k, lay in enumerate(self.layers):
            h = lay(t, h)
            if k < len(self.layers) - 1:
                h = self.act(h)
        return h


def exact_divergence(f, z, create_graph, frobenius=False):
    """``tr(df/dz)`` per row, by one autograd pass per dimension.

    Args:
        f: ``(n, d)`` output of a row-wise field evaluated at ``z`` (with a graph).
        z: ``(n, d)`` input that requires grad.
        create_graph: keep the graph of the result (needed to differentiate it).
        frobenius: also return ``|df/dz|_F^2`` per row (free: the rows are at hand).

    Returns:
        ``(div, frob)``: ``(n,)`` each (``frob`` is None unless requested).
    """
    div = torch.zeros(f.shape[0], dtype=f.dtype, device=f.device)
    frob = torch.zeros_like(div) if frobenius else None
    for i in range(z.shape[1]):
        (row,) = torch.autograd.grad(f[:, i].sum(), z, create_graph=create_graph, retain_graph=True)
        div = div + row[:, i]
        if frobenius:
            frob = frob + row.pow(2).sum(-1)
    return div, frob


def hutchinson_divergence(f, z, noise, create_graph, frobenius=False):
    """Hutchinson's estimate ``eps^T (df/dz) eps`` of ``tr(df/dz)`` per row.

    Args:
        f: ``(n, d)`` output of a row-wise field evaluated at ``z`` (with a graph).
        z: ``(n, d)`` input that requires grad.
        noise: ``(n, d)`` ``eps`` with ``E[eps eps^T] = I`` (Gaussian or Rademacher).
        create_graph: keep the graph of the result.
        frobenius: also return ``|eps^T df/dz|^2``, an unbiased estimate of ``|df/dz|_F^2``.

    Returns:
        ``(div, frob)``: ``(n,)`` each (``frob`` is None unless requested).
    """
    (vjp,) = torch.autograd.grad(f, z, noise, create_graph=create_graph)
    div = (vjp * noise).sum(-1)
    return div, (vjp.pow(2).sum(-1) if frobenius else None)


class CNFDynamics(nn.Module):
    """The augmented CNF field on ``(z, delta_logp)`` or
    ``(z, delta_logp, kinetic, jacobian)``.

    Args:
        net: field ``net(t, z)``, ``(n, d) -> (n, d)``, row-wise.
        trace: ``"exact"`` or ``"hutchinson"``.

    ``forward(t, state)`` returns ``(f, -div)`` or ``(f, -div, |f|^2, |df/dz|_F^2)``: shapes
    ``(n, d)`` and ``(n,)``. With the Hutchinson trace, :attr:`noise` (``(n, d)``, this
    rank's rows) must be set before the solve and stay fixed during it; :class:`CNF` does so.
    Works with and without grad mode (see the module docstring).
    """

    def __init__(self, net, trace="exact"):
        super().__init__()
        if trace not in ("exact", "hutchinson"):
            raise ValueError(f"trace must be 'exact' or 'hutchinson', got {trace!r}")
        self.net = net
        self.trace = trace
        self.noise = None

    def forward(self, t, state):
        z = state[0]
        regs = len(state) == 4
        graph = torch.is_grad_enabled()  # True in pnode's backward pass, False in its forward
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            f = self.net(t, z)
            if self.trace == "exact":
                div, frob = exact_divergence(f, z, create_graph=graph, frobenius=regs)
            else:
                noise = self.noise
                if noise is None or noise.shape != z.shape:
                    raise RuntimeError(
                        f"CNFDynamics.noise must be a tensor of the state's shape {tuple(z.shape)} for the "
                        f"Hutchinson trace, got {None if noise is None else tuple(noise.shape)}")
                div, frob = hutchinson_divergence(f, z, noise.to(z.dtype), create_graph=graph, frobenius=regs)
        if not graph:
            f, div = f.detach(), div.detach()
            frob = frob.detach() if frob is not None else None
        if not regs:
            return f, -div
        return f, -div, f.pow(2).sum(-1), frob


class _SolveScope(torch.autograd.Function):
    """Identity on a solve's outputs whose backward reinstalls that solve's trace mode and
    noise on the dynamics, so that the adjoint (which runs right after it, and may re-solve
    the forward) sees the settings of *this* solve even if other solves changed them since."""

    @staticmethod
    def forward(ctx, dynamics, trace, noise, *xs):
        ctx.dynamics, ctx.trace, ctx.noise = dynamics, trace, noise
        return tuple(x.clone() for x in xs)

    @staticmethod
    def backward(ctx, *grads):
        ctx.dynamics.trace, ctx.dynamics.noise = ctx.trace, ctx.noise
        return (None, None, None, *grads)


class CNF(nn.Module):
    """FFJORD continuous normalizing flow with pnode's discrete adjoint.

    Data at ``t = 0``, base ``N(0, I)`` at ``t = T`` (see the module docstring).

    Args:
        dim: data dimension ``d``.
        hidden, activation, layer: the :class:`ODENet` (ignored when ``net`` is given).
        net: a custom row-wise field ``net(t, z)``, ``(n, d) -> (n, d)``, twice differentiable.
        T: integration time.
        trace: ``"exact"``, ``"hutchinson"`` or ``"auto"`` (exact for ``d <= 8``).
        noise: Hutchinson noise, ``"gaussian"`` or ``"rademacher"``.
        kinetic_weight, jacobian_weight: RNODE weights of the kinetic energy and of the
            Jacobian Frobenius norm in the ``reg`` that ``log_prob(x, return_reg=True)``
            returns.
        method, rtol, atol, options, checkpoint, petsc_options: passed to
            :class:`pnode.ODESolver` (use an explicit method: ``dopri5``, ``bosh3``, ``rk4``...).
        comm: MPI communicator for data-parallel :meth:`log_prob` (each rank passes its
            shard; every rank gets the gradient of the sum of the ranks' losses).
        seed: seed of the Hutchinson noise generator (same noise for any rank count).

    The model's dtype is its parameters' (``CNF(...).double()`` for float64); inputs must match.
    """

    def __init__(self, dim, hidden=(64, 64, 64), activation="tanh", layer="concatsquash", net=None,
                 T=1.0, trace="auto", noise="gaussian", kinetic_weight=0.0, jacobian_weight=0.0,
                 method="dopri5", rtol=1e-5, atol=1e-5, options=None, checkpoint=None,
                 petsc_options=None, comm=None, seed=0):
        super().__init__()
        if trace == "auto":
            trace = "exact" if dim <= 8 else "hutchinson"
        if noise not in ("gaussian", "rademacher"):
            raise ValueError(f"noise must be 'gaussian' or 'rademacher', got {noise!r}")
        if not T > 0:
            raise ValueError(f"T must be positive, got {T!r}")
        self.dim = int(dim)
        self.dynamics = CNFDynamics(net if net is not None else ODENet(dim, hidden, activation, layer), trace)
        self._trace = trace
        self.T = float(T)
        self.noise_type = noise
        self.kinetic_weight = float(kinetic_weight)
        self.jacobian_weight = float(jacobian_weight)
        self.solver_kwargs = dict(method=method, rtol=rtol, atol=atol, options=options,
                                  checkpoint=checkpoint, petsc_options=petsc_options)
        self.comm = comm
        self.seed = seed
        self._noise_gen = torch.Generator().manual_seed(seed)
        self._sample_gen = torch.Generator().manual_seed(seed + 1)
        self._solvers = {}
        self.last_reg_terms = None

    # ------------------------------------------------------------------ helpers
    @property
    def net(self):
        """The vector field ``net(t, z)``."""
        return self.dynamics.net

    @property
    def trace(self):
        """The default trace estimator, ``"exact"`` or ``"hutchinson"``."""
        return self._trace

    def _solver(self, kind):
        solver = self._solvers.get(kind)
        if solver is None:
            func = self.net if kind == "sample_plain" else self.dynamics
            solver = ODESolver(func, comm=self.comm if kind == "log_prob" else None, **self.solver_kwargs)
            self._solvers[kind] = solver
        return solver

    @property
    def stats(self):
        """Counters of the last :meth:`log_prob` solve (see :attr:`pnode.ODESolver.stats`)."""
        solver = self._solvers.get("log_prob")
        return dict(solver.stats) if solver is not None else {}

    def _like(self):
        p = next(self.parameters(), None)
        if p is None:  # a parameter-free custom field
            return dict(dtype=torch.float64, device=torch.device("cpu"))
        return dict(dtype=p.dtype, device=p.device)

    def _draw(self, n, gen):
        if self.noise_type == "gaussian":
            e = torch.randn(n, self.dim, generator=gen, dtype=torch.float64)
        else:
            e = torch.randint(0, 2, (n, self.dim), generator=gen).to(torch.float64) * 2 - 1
        return e.to(**self._like())

    def draw_noise(self, n):
        """Hutchinson noise for this rank's ``n`` rows: ``(n, d)``.

        Draws the noise of the whole global batch (sizes summed over ``comm``) from the
        seeded generator and returns this rank's rows (offset = rows of lower ranks), so
        every rank count sees the same global noise. Collective when ``comm`` has >1 rank.
        """
        comm = as_mpi4py(self.comm)
        if comm.Get_size() > 1:
            offset = comm.exscan(n) or 0
            total = comm.allreduce(n)
        else:
            offset, total = 0, n
        return self._draw(total, self._noise_gen)[offset:offset + n]

    def _check_x(self, x):
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must be a tensor of shape (n, {self.dim}), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        like = self._like()
        if x.dtype != like["dtype"]:
            raise TypeError(f"x has dtype {x.dtype} but the model {like['dtype']} (use .to() on one of them)")

    def _solve(self, kind, state, t, trace, noise):
        dyn = self.dynamics
        dyn.trace, dyn.noise = trace, noise
        try:
            ys = self._solver(kind)(state, torch.tensor(t, dtype=torch.float64))
        finally:
            dyn.trace = self._trace
        final = tuple(y[-1] for y in ys)
        if torch.is_grad_enabled() and final[0].requires_grad:
            final = _SolveScope.apply(dyn, trace, noise, *final)
        return final

    # ------------------------------------------------------------------ public API
    def log_prob(self, x, return_reg=False, noise=None, trace=None, local=False):
        """``log p(x)`` per row, integrating ``(x, 0)`` from ``t = 0`` to ``t = T``.

        Args:
            x: ``(n, d)`` data: this rank's shard under MPI (all ranks of ``comm`` call
                together, each with its own rows; uneven shards are fine).
            return_reg: also integrate the RNODE accumulators and return their weighted
                sum ``reg = kinetic_weight * int|f|^2 + jacobian_weight * int|df/dz|_F^2``.
            noise: ``(n, d)`` Hutchinson noise to use instead of :meth:`draw_noise`.
            trace: ``"exact"`` or ``"hutchinson"`` for this call only (e.g. an exact
                evaluation of a model trained with Hutchinson); default :attr:`trace`.
            local: solve on this process alone, ignoring ``comm`` (e.g. rank 0 plotting);
                Hutchinson noise then comes from the sampling generator.

        Returns:
            ``logp`` ``(n,)``, or ``(logp, reg)`` with ``reg`` ``(n,)`` when ``return_reg``.
            Differentiable w.r.t. ``x`` and the parameters (discrete adjoint). The separate
            terms (per row, detached) are kept in :attr:`last_reg_terms`.
        """
        self._check_x(x)
        n = x.shape[0]
        trace = self._trace if trace is None else trace
        if trace not in ("exact", "hutchinson"):
            raise ValueError(f"trace must be 'exact' or 'hutchinson', got {trace!r}")
        if trace == "hutchinson":
            if noise is None:
                noise = self._draw(n, self._sample_gen) if local else self.draw_noise(n)
            noise = noise.to(**self._like())
            if noise.shape != x.shape:
                raise ValueError(f"noise must have x's shape {tuple(x.shape)}, got {tuple(noise.shape)}")
        else:
            noise = None
        zero = x.new_zeros(n)
        state = (x, zero, zero, zero) if return_reg else (x, zero)
        final = self._solve("log_prob_local" if local else "log_prob", state, [0.0, self.T], trace, noise)
        logp = standard_normal_logprob(final[0]) - final[1]
        if not return_reg:
            return logp
        kinetic, jac = final[2], final[3]
        self.last_reg_terms = {"kinetic": kinetic.detach(), "jacobian": jac.detach()}
        return logp, self.kinetic_weight * kinetic + self.jacobian_weight * jac

    def forward(self, x):
        """Same as :meth:`log_prob`: ``(n, d) -> (n,)``."""
        return self.log_prob(x)

    def sample(self, n, z=None, return_log_prob=False, generator=None):
        """Samples ``x``, integrating base samples ``z`` from ``t = T`` back to ``t = 0``.

        Runs on this process alone (``comm`` is not used), from a generator separate from
        the Hutchinson noise of :meth:`log_prob`.

        Args:
            n: number of samples (ignored when ``z`` is given).
            z: ``(n, d)`` base samples (default: drawn from ``N(0, I)``).
            return_log_prob: also return ``log p(x)`` (integrates the trace too).
            generator: torch.Generator for ``z`` and the noise (default: the CNF's own).

        Returns:
            ``x`` ``(n, d)``, or ``(x, logp)`` with ``logp`` ``(n,)``.
        """
        gen = generator if generator is not None else self._sample_gen
        if z is None:
            z = torch.randn(n, self.dim, generator=gen, dtype=torch.float64).to(**self._like())
        self._check_x(z)
        t = [self.T, 0.0]
        if not return_log_prob:
            ys = self._solver("sample_plain")(z, torch.tensor(t, dtype=torch.float64))
            return ys[-1]
        noise = self._draw(z.shape[0], gen) if self._trace == "hutchinson" else None
        x, delta = self._solve("sample", (z, z.new_zeros(z.shape[0])), t, self._trace, noise)
        return x, standard_normal_logprob(z) + delta

    def close(self):
        """Destroy the PETSc solvers now (they are re-created on the next call)."""
        for solver in self._solvers.values():
            solver.close()
        self._solvers = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_solvers"] = {}
        state["_noise_gen"] = self._noise_gen.get_state()
        state["_sample_gen"] = self._sample_gen.get_state()
        return state

    def __setstate__(self, state):
        noise_state, sample_state = state["_noise_gen"], state["_sample_gen"]
        state["_noise_gen"], state["_sample_gen"] = torch.Generator(), torch.Generator()
        self.__dict__.update(state)
        self._noise_gen.set_state(noise_state)
        self._sample_gen.set_state(sample_state)
