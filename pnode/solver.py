"""ODESolver: a reusable, differentiable ODE solve on PETSc.

The solver validates its settings (:mod:`pnode.validate`, :mod:`pnode.methods`,
:mod:`pnode.checkpoint`) and hands each call to its
:class:`~pnode.integrator.Integrator` through the autograd Function of
:mod:`pnode.adjoint`; ``docs/architecture.md`` follows one call through the modules.
"""
import functools
import weakref

import torch

from . import checkpoint as _ckpt
from .adjoint import solve
from .bridge import StateLayout
from .dynamics import call_explained
from .events import until_event
from .integrator import Integrator
from .methods import get_method
from .parallel import as_petsc
from .params import differentiated, unseen
from .petsc_options import OptionSource
from .timegrid import TimeGrid
from .settings import resolve
from .validate import check_prefix, check_t, check_tolerance

_LIVE = weakref.WeakSet()  # solvers to close at interpreter exit (see close_all)


class ODESolver:
    """A reusable, differentiable ODE solve ``ys = solver(y0, t)``.

    Args:
        func: ``nn.Module`` or callable ``func(t, y) -> dy/dt`` (same layout as ``y``).
        method: integrator name (see :mod:`pnode.methods`; default ``dopri5``).
        rtol, atol: tolerances of adaptive step control (ignored for fixed steps).
        options: dict; ``step_size`` (fixed steps), ``first_step``, ``max_num_steps``,
            ``min_step``/``max_step`` (adaptive step limits), ``step_t`` (forced step
            boundaries), ``jump_t`` (boundaries where ``func`` jumps; evaluations there
            move to the step's side), ``perturb`` (every boundary evaluation moves inside
            its step), ``grid_constructor`` (``fn(func, y0, t) -> grid``: the step
            boundaries), ``norm`` (``"rms"`` or ``"max"`` error norm), ``dtype`` and
            ``interp`` (accepted for torchdiffeq, no effect), ``interpolate`` (adaptive
            explicit methods: ``True``, the default, steps freely and interpolates the
            output times inside steps, exactly differentiated; ``False`` stops on every
            output time; see :mod:`pnode.interpolation`), and for implicit methods
            ``theta``, ``endpoint``, ``func_explicit`` (IMEX: the explicit part), ``mass``
            (``M`` in ``M y' = f``), ``jacobian`` (``"auto"``, the default: per-sample
            block Jacobians where the field allows; ``"block"`` insists; ``"dense"``
            assembles ``shift*M - J`` for LU; ``"matrix-free"``: unpreconditioned
            Newton-Krylov) and
            ``preconditioner`` (``prec(t, y, shift, r, transpose) -> z`` approximating
            ``(shift*M - J)^{-1} r``, or its transpose).
        checkpoint: a :class:`pnode.Checkpoint`, a strategy name, or None (``"auto"``: store
            all, and explicit methods keep their stage graphs within 512 MiB).
        petsc_options: dict of PETSc options (without the dash) used as defaults under
            this solver's prefix, e.g. ``{"ts_monitor": None}``.
        prefix: PETSc options prefix (``"enc_"`` reads ``-enc_ts_type``).
        comm: MPI communicator (default ``COMM_SELF``).
        adjoint_params: tensors to differentiate with respect to (default: the
            parameters of ``func`` and ``options["func_explicit"]``; for a plain
            function or lambda, those of the modules it refers to).
        progress: show a tqdm bar over ``t`` during each forward solve (rank 0 only).
        callback: ``callback(t, y, stats)`` after every accepted forward step: ``t`` a
            float (user time), ``y`` the state (a copy, the user's layout), ``stats`` a
            dict of the counters so far. For logging; it must not change ``y``.

    Attributes:
        stats: dict of counters from the last forward (and backward) pass: ``steps``,
            ``rejected_steps``, ``rhs_evals``, ``jvp_evals``, ``vjp_evals``,
            ``newton_iterations``, ``linear_iterations``, ``adjoint_linear_iterations``,
            ``adjoint_steps``,
            ``recomputed_steps``, ``checkpoints`` (most states held at once),
            ``checkpoint_bytes``.
        step_times: 1-D float64 tensor of the accepted step boundaries of the last
            solve, from ``t[0]`` to ``t[-1]`` inclusive (user time units).
    """

    def __init__(self, func, *, method=None, rtol=1e-7, atol=1e-9, options=None,
                 checkpoint=None, petsc_options=None, prefix=None, comm=None,
                 adjoint_params=None, progress=False, callback=None):
        if not callable(func):
            raise TypeError("func must be callable: func(t, y) -> dy/dt")
        self.func = func
        self.method = get_method(method)
        self.rtol = check_tolerance(rtol, "rtol")
        self.atol = check_tolerance(atol, "atol")
        self.settings = resolve(options, self.method)
        self.checkpoint = _ckpt.coerce(checkpoint)
        if petsc_options is not None and not isinstance(petsc_options, dict):
            raise TypeError("petsc_options must be a dict like {'ts_monitor': None}")
        self.prefix = check_prefix(prefix)
        self.petsc_options = dict(petsc_options or {})
        self.comm = as_petsc(comm)
        self._adjoint_params = None if adjoint_params is None else list(adjoint_params)
        self._integrator = Integrator(func, self.method, self.settings, self.checkpoint,
                                      OptionSource(prefix, self.petsc_options), self.comm,
                                      self.rtol, self.atol)
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be True or False, got {progress!r}")
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable: callback(t, y, stats)")
        self._integrator.progress, self._integrator.callback = progress, callback
        self._unseen = None  # what the first differentiated call found func using but not differentiating
        _LIVE.add(self)

    def __call__(self, y0, t, *, recompute_forward=False):
        """Solve from ``y0`` at ``t[0]`` and return the states at every ``t[k]``.

        Args:
            y0: Tensor of any shape, or tuple of Tensors (float32/float64).
            t: strictly monotone 1-D tensor (or sequence) of output times.
            recompute_forward: keep nothing of the forward pass; the backward pass
                re-solves from ``y0`` first (ANODE-style block recomputation).

        Returns:
            Tensor of shape ``(len(t), *y0.shape)`` (a tuple of such for tuple ``y0``),
            differentiable with respect to ``y0``, the parameters and, when ``t``
            requires grad, the times (see :func:`pnode.adjoint.time_gradient`).
        """
        layout = StateLayout.of(y0)
        times = check_t(t)
        if isinstance(t, torch.Tensor) and t.requires_grad and self.settings.implicit.mass is not None:
            raise ValueError("gradients with respect to t need dy/dt, which options['mass'] leaves implicit: "
                             "pass t without requires_grad")
        grid = TimeGrid.of(times, self.settings.grid, self.func, y0, t)
        if torch.is_grad_enabled():
            self._integrator.unseen = self._check_unseen(layout, y0, times)
        interpolate = self.settings.grid.interpolates(isinstance(t, torch.Tensor) and t.requires_grad)
        return solve(self._integrator, layout, y0, grid, self.params, record=not recompute_forward, t=t,
                     interpolate=interpolate)

    def until_event(self, y0, t, event_fn):
        """Solve from ``t[0]`` in the direction of ``t[1]`` until ``event_fn(t, y)``
        crosses zero; returns ``(event_t, ys)`` (see :func:`pnode.events.until_event`)."""
        return until_event(self, self._integrator, y0, t, event_fn)

    def _check_unseen(self, layout, y0, times):
        """``(missing, error)``: tensors ``func`` uses that need a gradient pnode would not
        compute (found once, by one evaluation with a graph at ``(t[0], y0)``; see
        :func:`pnode.params.unseen`), and the exception that evaluation raised."""
        if self._unseen is not None:
            return self._unseen, None
        params = self.params
        fields = [functools.partial(call_explained, f, params=params, name=name)
                  for f, name in ((self.func, "func"), (self.settings.func_explicit, "options['func_explicit']"))
                  if f is not None]
        y = layout.unflatten(layout.flatten(y0).detach())
        t0, t1 = (torch.tensor(x, dtype=layout.dtype, device=layout.device) for x in (times[0], times[-1]))
        if len(times) > 1 and (self.settings.grid.perturb or times[0] in self.settings.grid.jump_t):
            t0 = torch.nextafter(t0, t1)  # no evaluation on a grid point, as the solve does
        missing, error = unseen(fields, t0, y, params)
        if error is None:  # an evaluation that raised is looked at again next call
            self._unseen = missing
        return missing, error

    @property
    def params(self):
        """Tensors that receive gradients (``requires_grad`` ones only): ``adjoint_params``
        if given, else the parameters of ``func`` (an ``nn.Module``) or of the modules a
        plain ``func`` refers to (see :mod:`pnode.params`), and of ``func_explicit``."""
        return differentiated(self.func, self.settings.func_explicit, self._adjoint_params)

    @property
    def stats(self):
        """Counters of the last forward (and backward) pass (see the class docstring)."""
        return self._integrator.stats

    @property
    def step_times(self):
        """Accepted step boundaries of the last solve (1-D float64, user time units)."""
        return self._integrator.step_times

    @property
    def petsc_ts(self):
        """The PETSc ``TS`` of the last solve (None before the first): for inspecting
        what PETSc chose (``solver.petsc_ts.getType()``); pnode owns and destroys it."""
        ws = self._integrator.workspace
        return ws.ts if ws is not None else None

    def close(self):
        """Destroy the PETSc objects now (also done by ``with`` and at exit)."""
        integrator = getattr(self, "_integrator", None)
        if integrator is not None:
            integrator.discard()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def close_all():
    """Close every live solver (registered with atexit by pnode)."""
    for solver in list(_LIVE):
        solver.close()
