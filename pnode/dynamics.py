"""The user's vector field, seen as PETSc sees it: flat double vectors in, flat out.

:class:`Dynamics` evaluates ``func`` on flat states and counts the calls.
:class:`Linearization` is ``func`` linearised at one point ``(t, u)``: Jacobian-vector
products by forward-mode autodiff, vector-Jacobian products (for the state and the
parameters) by reverse mode, all from the point it was created at. PETSc's Jacobian
callbacks each capture their own point; two callbacks at the same point share one
Linearization (and its graph), found by comparing values, never by call order.
"""
import torch

from . import profiling
from .bridge import PETSC_DTYPE


def call_explained(func, t, y, params, name="func"):
    """``func(t, y)``, with torch's dtype error inside it ("mat1 and mat2 must have the same
    dtype") turned into a TypeError saying which dtypes disagree (the parameters' and the
    state's) and how to make them agree; any other exception propagates unchanged."""
    try:
        return func(t, y)
    except RuntimeError as err:
        mismatch = _dtype_mismatch(err, func, params, (y if isinstance(y, torch.Tensor) else y[0]).dtype, name)
        if mismatch is None:
            raise
        raise TypeError(mismatch) from None


def _dtype_mismatch(err, func, params, state, name):
    """The message for a dtype error raised inside ``func``, or None for any other error."""
    text = str(err)
    if not any(word in text for word in ("dtype", "scalar type", "type (")):
        return None
    other = sorted({str(p.dtype) for p in _floating(func, params) if p.dtype != state})
    if not other:
        return None
    return (f"{name}'s parameters are {other[0]} but the state (y0) is {state}, and torch cannot mix "
            f"them in one operation ({text.splitlines()[0]}). Convert one to the other: "
            f"y0.to({other[0]}), or {name}.to({state}) for an nn.Module (pnode integrates in float64 "
            "either way; the dtype is the one func computes in)")


class Dynamics:
    """``func`` (``dy/dt = func(t, y)``) on flat vectors.

    Args:
        func: callable ``func(t, y)``; ``t`` a 0-d tensor, ``y`` in the user's layout.
        layout: the :class:`~pnode.bridge.StateLayout` of the state.
        params: tensors to differentiate with respect to (may be empty).
        clock: the :class:`~pnode.bridge.Clock` mapping PETSc's time to the user's
            (a decreasing ``t`` makes the field ``-func(t0 - s, y)``).
        stats: dict whose ``rhs_evals``/``jvp_evals``/``vjp_evals`` counters are bumped.
        joint_vjp: compute the parameter VJP together with the state VJP and keep it for
            the parameter-Jacobian callback (exact when keyed by inputs; halves the
            backward cost of explicit methods, where PETSc asks for both at one point).
    """

    def __init__(self, func, layout, params, clock, stats, joint_vjp=True, name="func"):
        self.func = func
        self.layout = layout
        self.params = list(params)
        self.clock = clock
        self.stats = stats
        self.joint_vjp = joint_vjp
        self.name = name
        self._recent = []  # small cache of Linearizations, newest last
        self.double_backward = True  # JVPs by double backward until the field refuses
        self.batched_backward = True  # several VJPs in one backward until the field refuses
        self.nudge = None  # a pnode.timegrid.Nudge when evaluations at step boundaries move inside
        self.store = None  # a pnode.graphs.GraphStore when the forward keeps its stage graphs
        self._times = {}  # s -> t tensor of recent calls: a step's stages share times (RK4: 3 of 4)

    def time(self, s):
        """The user time ``func`` sees at solver time ``s`` (0-d tensor, model dtype)."""
        if self.nudge is None:
            t = self._times.get(s)
            if t is not None:
                return t
        t = torch.tensor(self.clock.user(s), dtype=self.layout.dtype, device=self.layout.device)
        if self.nudge is not None:
            return self.nudge(s, t)
        if len(self._times) >= 16:  # the current step's times and the next's are what recur
            self._times.clear()
        self._times[s] = t
        return t

    def __call__(self, s, u):
        """Evaluate on a model-dtype flat tensor ``u`` at solver time ``s``; returns flat."""
        return self.evaluate(self.time(s), u)

    def evaluate(self, t, u):
        """Evaluate at user time ``t`` (0-d tensor); ``u`` flat, model dtype; returns flat
        in solver time (sign-flipped for a decreasing ``t``)."""
        out = call_explained(self.func, t, self.layout.unflatten(u), self.params, self.name)
        self._check_output(out)
        flat = self.layout.flatten(out)
        return flat if self.clock.sign > 0 else -flat

    def _check_output(self, out):
        """Every call: a wrong shape would be silently reshaped or broadcast, a wrong
        dtype silently converted (cheap: a few tuple comparisons)."""
        lay = self.layout
        if not lay.is_tuple and isinstance(out, torch.Tensor):
            if out.shape == lay.shapes[0] and out.dtype == lay.dtype:
                return
            members = (out,)
        elif lay.is_tuple and isinstance(out, (tuple, list)):
            members = tuple(out)
        else:
            want = "a tuple of Tensors" if lay.is_tuple else "a Tensor"
            raise TypeError(f"{self.name} must return {want} like the state, got {type(out).__name__}")
        for m in members:
            if not isinstance(m, torch.Tensor):
                raise TypeError(f"{self.name} must return Tensors, got {type(m).__name__}")
        got = tuple(tuple(m.shape) for m in members)
        want = tuple(tuple(s) for s in lay.shapes)
        if got != want:
            fmt = (lambda s: s) if lay.is_tuple else (lambda s: s[0])
            raise ValueError(f"{self.name} returned shape {fmt(got)} but the state has shape {fmt(want)}")
        bad = [m.dtype for m in members if m.dtype != lay.dtype]
        if bad:
            raise TypeError(f"{self.name} returned dtype {bad[0]} but the state has dtype {lay.dtype} "
                            f"(return the state's dtype)")

    def rhs(self, s, u64):
        """``f(s, u)`` without a graph; ``u64`` a PETSc-side flat tensor; returns float64."""
        self.stats["rhs_evals"] += 1
        if self.store is not None and self.store.recording and self.store.wanted(s):  # keep it for the adjoint
            lin = Linearization(self, s, u64.clone(), self.time(s))
            self.store.record(lin, self.params)
            return self.layout.to_petsc(lin.output().detach())
        lay = self.layout
        with profiling.FUNC:
            if not torch.is_grad_enabled():  # inside the forward solve already (a no_grad block costs ~2 us)
                return lay.to_petsc(self(s, lay.to_model(u64)))
            with torch.no_grad():
                return lay.to_petsc(self(s, lay.to_model(u64)))

    def linearize(self, s, u64):
        """The :class:`Linearization` at ``(s, u)``, reusing a recent one at the same point."""
        # a nudged evaluation is another point than the unnudged one at the same s; without
        # a nudge the time follows from s, and no time tensor is made for a point found
        t = self.time(s) if self.nudge is not None else None
        for lin in reversed(self._recent):
            if lin.s == s and (t is None or lin.t is t or bool(lin.t == t)) and torch.equal(lin.u64, u64):
                return lin
        lin = self.store.take(s, u64, t, t is not None) if self.store is not None else None
        if lin is None:
            lin = Linearization(self, s, u64.clone(), self.time(s) if t is None else t)
        self._recent = self._recent[-1:] + [lin]  # two points: CN linearises at t_n and t_n+1
        return lin

    def forget(self):
        """Drop cached linearizations (and their graphs)."""
        self._recent = []


class Linearization:
    """``func`` linearised at one point; products come out in float64 (PETSc's dtype).

    The graph of ``func(s, u)`` is built on the first VJP and kept for the following
    ones at this point (an implicit method's transposed Krylov solve asks for many).
    """

    def __init__(self, dyn, s, u64, t):
        self.dyn = dyn
        self.s = s
        self.t = t  # the user time func is evaluated at (a 0-d tensor)
        self.u64 = u64
        self._graph = None
        self._dual = None  # (w, J^T w with its graph) for Jacobian-vector products
        self._joint = None  # (v or None, parameter VJP, Vec key) of the last joint product

    def jvp(self, v64):
        """``J v`` with ``J = d func / d u`` at this point.

        By the double-backward identity ``J v = d/dw (J^T w) . v`` on this point's kept
        graph (built once, then ~2 backward passes per product, an order of magnitude
        cheaper than re-tracing ``torch.func.jvp`` each call); fields whose autograd has
        no double backward fall back to ``torch.func.jvp``.
        """
        with profiling.JVP:
            return self._jvp(v64)

    def _jvp(self, v64):
        dyn = self.dyn
        dyn.stats["jvp_evals"] += 1
        v = dyn.layout.to_model(v64)
        if dyn.double_backward:
            try:
                return self._jvp_by_double_backward(v)
            except RuntimeError:
                dyn.double_backward = False
        u = dyn.layout.to_model(self.u64)
        with torch.no_grad():
            _, out = torch.func.jvp(lambda x: dyn.evaluate(self.t, x), (u,), (v,))
        return out.to(PETSC_DTYPE)

    def _jvp_by_double_backward(self, v):
        if self._dual is None:
            if self._graph is None:
                self.build()
            u, out = self._graph
            w = torch.zeros_like(out, requires_grad=True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad(out, u, w, create_graph=True, allow_unused=True) \
                    if out.requires_grad else (None,)
            self._dual = (w, g if g is not None and g.requires_grad else None)
        w, g = self._dual
        if g is None:  # J^T w does not depend on w: J = 0
            return torch.zeros_like(v, dtype=PETSC_DTYPE)
        (jv,) = torch.autograd.grad(g, w, v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v, dtype=PETSC_DTYPE) if jv is None else jv.reshape(-1).to(PETSC_DTYPE)

    def vjp_rows(self, V64):
        """``J^T v`` for each row ``v`` of ``V64`` (``(k, n)``), in one batched backward
        pass (a loop for fields whose backward cannot be batched)."""
        dyn = self.dyn
        if self._graph is None:
            self.build()
        u, out = self._graph
        dyn.stats["vjp_evals"] += V64.shape[0]
        if not out.requires_grad:
            return torch.zeros_like(V64, dtype=PETSC_DTYPE)
        V = dyn.layout.to_model(V64).reshape(V64.shape[0], *out.shape)
        if dyn.batched_backward:
            with profiling.VJP:
                rows = self._batched_vjp(out, u, V, V64)
            if rows is not None:
                return rows
        return torch.stack([self.vjp(v).to(PETSC_DTYPE) for v in V64])

    def _batched_vjp(self, out, u, V, V64):
        """The rows of :meth:`vjp_rows` in one backward pass, or None when the field's
        backward cannot be batched (then never tried again)."""
        try:
            (rows,) = torch.autograd.grad(out, u, V, retain_graph=True, allow_unused=True, is_grads_batched=True)
        except RuntimeError:
            self.dyn.batched_backward = False
            return None
        return torch.zeros_like(V64, dtype=PETSC_DTYPE) if rows is None else rows.reshape(V64.shape).to(PETSC_DTYPE)

    def build(self):
        """Evaluate ``func`` at this point with a graph (kept for the products)."""
        dyn = self.dyn
        u = dyn.layout.to_model(self.u64).detach().requires_grad_(True)
        with torch.enable_grad(), profiling.FUNC_GRAPH:
            out = dyn.evaluate(self.t, u)
        self._graph = (u, out)

    def output(self):
        """``func`` at this point (from its graph, built if needed)."""
        if self._graph is None:
            self.build()
        return self._graph[1]

    def _grad(self, v64, wrt):
        dyn = self.dyn
        if self._graph is None:
            self.build()
        u, out = self._graph
        dyn.stats["vjp_evals"] += 1
        v = dyn.layout.to_model(v64)
        if not out.requires_grad:  # func ignores both u and the parameters
            return [None] * len(wrt)
        with profiling.VJP:
            return vjp_of(out, wrt, v)

    def vjp(self, v64, key=None):
        """``J^T v`` (float64, flat). Also computes ``Jp^T v`` when joint products are on,
        kept for :meth:`param_vjp` at the same ``v``, or for :meth:`joint_for` ``key``
        (the :func:`~pnode.bridge.vec_identity` of the Vec ``v`` views)."""
        dyn = self.dyn
        u = self._graph[0] if self._graph is not None else None
        if dyn.joint_vjp and dyn.params:
            if u is None:
                self.build()
                u = self._graph[0]
            grads = self._grad(v64, [u] + dyn.params)
            # from a Vec (key) the parameter callback finds it by identity: no copy of v
            self._joint = (v64.clone() if key is None else None, flat_params(grads[1:], dyn.params), key)
            gu = grads[0]
        else:
            if u is None:
                self.build()
                u = self._graph[0]
            (gu,) = self._grad(v64, [u])
        if gu is None:
            return torch.zeros_like(v64)
        return dyn.layout.to_petsc(gu)

    def joint_for(self, key):
        """The parameter product kept by the last :meth:`vjp` if it was for the Vec whose
        :func:`~pnode.bridge.vec_identity` is ``key``, else None (no Vec read to compare)."""
        if self._joint is not None and key is not None and self._joint[2] == key:
            return self._joint[1]
        return None

    def param_vjp(self, v64):
        """``Jp^T v`` with ``Jp = d func / d params`` at this point (float64, flat)."""
        if self._joint is not None and self._joint[0] is not None and torch.equal(self._joint[0], v64):
            return self._joint[1]
        grads = self._grad(v64, self.dyn.params)
        return flat_params(grads, self.dyn.params)


def flat_params(grads, params):
    """Concatenate parameter gradients (None -> zeros) into one float64 vector."""
    if not params:
        return torch.zeros(0, dtype=PETSC_DTYPE)
    parts = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
    flat = _flatten(parts) if len(parts) > 1 else parts[0].reshape(-1)
    return flat if flat.dtype == PETSC_DTYPE else flat.to(PETSC_DTYPE)


try:  # one C++ call (reshape + cat costs ~2 us more for four tensors, paid per stage)
    from torch._utils import _flatten_dense_tensors as _flatten
except ImportError:  # another torch
    def _flatten(parts):
        return torch.cat([p.reshape(-1) for p in parts])


try:  # what torch.autograd.grad calls once it has checked its arguments
    from torch.autograd.graph import _engine_run_backward
except ImportError:  # another torch: the public function
    _engine_run_backward = None


def vjp_of(out, inputs, v):
    """``torch.autograd.grad(out, inputs, v, retain_graph=True, allow_unused=True)``.

    The public function spends ~10 us a call checking and normalising its arguments (a
    third of a small field's backward pass, paid per stage); here ``v`` is shaped like
    ``out`` by construction, so pnode hands the pass straight to autograd's engine, as
    the public function itself does after its checks. Falls back to the public
    function where torch has no such entry point.
    """
    if _engine_run_backward is None or v.shape != out.shape or v.dtype != out.dtype:
        return torch.autograd.grad(out, inputs, v, retain_graph=True, allow_unused=True)
    return _engine_run_backward((out,), (v,), True, False, tuple(inputs), True, False)


def _floating(func, params):
    """The floating-point tensors ``func`` computes with: ``params`` and, for an
    ``nn.Module``, its parameters and buffers."""
    tensors = list(params)
    if isinstance(func, torch.nn.Module):
        tensors += list(func.parameters()) + list(func.buffers())
    return [p for p in tensors if p.is_floating_point()]
