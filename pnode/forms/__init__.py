"""Wiring a PETSc TS to torch: which callbacks and Mats, for which form of the ODE.

Three forms, named by :attr:`pnode.methods.Method.form` (and
:func:`pnode.methods.form_of` for a TS type chosen on the command line):

- ``rhs`` (explicit RK): ``u' = f(t, u)``, :class:`~pnode.forms.rhs.RHSPart`.
- ``implicit`` (theta, BE, CN, BDF, ...): ``F(t, u, u') = M u' - f(t, u) = 0``,
  :class:`~pnode.forms.implicit.ImplicitPart`.
- ``imex`` (ARKIMEX): both at once, the stiff ``f`` implicit (identity mass) and the
  explicit ``g = options["func_explicit"]`` as the right-hand side (zero when absent).
"""
from .implicit import ImplicitPart
from .rhs import RHSPart


class Wiring:
    """The callbacks, Vecs and Mats of one TS for one state size and form.

    Args:
        ts: the TS to wire.
        form: ``rhs``, ``implicit`` or ``imex``.
        sizes: :class:`~pnode.parallel.Sizes` of the state and parameters.
        reducer: :class:`~pnode.parallel.Reducer` summing parameter products on rank 0.
        dyn: :class:`~pnode.dynamics.Dynamics` of ``func`` (the stiff part for imex).
        dyn_ex: Dynamics of ``func_explicit`` (imex only; None means zero).
        trap: the solver's :class:`~pnode.errors.CallbackTrap`.
        mass: :class:`~pnode.forms.jacobians.MassMatrix` or None.
        dense: assemble the implicit Jacobian densely (LU) instead of matrix-free.
        preconditioner: optional user PC callable (matrix-free implicit only).
        blocks: ``(B, d)`` per-sample blocks for the default PC, or None.
        sparse, linear, large: the sparse Jacobian, linearity and size warning of
            :class:`~pnode.forms.implicit.ImplicitPart`.
    """

    def __init__(self, ts, form, sizes, reducer, dyn, dyn_ex, trap, mass=None, dense=False,
                 preconditioner=None, blocks=None, sparse=None, linear=False, large=None):
        self.explicit = self.implicit = None
        if form in ("implicit", "imex"):
            self.implicit = ImplicitPart(ts, sizes, reducer, dyn, trap, mass, dense, preconditioner, blocks,
                                         sparse=sparse, linear=linear, large=large)
        if form == "rhs":
            self.explicit = RHSPart(ts, sizes, reducer, dyn, trap)
        elif form == "imex":
            # PETSc's ARKIMEX adjoint needs an RHS Jacobian even when g is zero
            self.explicit = RHSPart(ts, sizes, reducer, dyn_ex, trap)
        self.form = form

    @property
    def _parts(self):
        return [p for p in (self.implicit, self.explicit) if p is not None]

    def rebind(self, dyn, dyn_ex):
        """Use new Dynamics (a new call) with the same PETSc objects."""
        if self.implicit is not None:
            self.implicit.rebind(dyn)
        if self.explicit is not None:
            self.explicit.rebind(dyn if self.form == "rhs" else dyn_ex)

    def forget(self):
        """Drop cached linearizations (graphs) of every part."""
        for part in self._parts:
            part.forget()

    def configure_pc(self, ts, scale_atol=False):
        """After setFromOptions: install the user's PC hook, if any; with ``scale_atol``
        (the user set no ``snes_atol``), scale Newton's absolute tolerance to the problem
        (:meth:`~pnode.forms.implicit.ImplicitPart.scale_atol`)."""
        if self.implicit is not None:
            self.implicit.configure_pc(ts)
            self.implicit.scale_atol(ts, scale_atol)

    def destroy(self):
        """Destroy the Mats and Vecs of every part."""
        for part in self._parts:
            part.destroy()
