"""The PETSc objects of one solver configuration: a TS, its Vecs and its wiring.

A workspace is built for one (state sizes, form, number of output times) and reused by
every call that matches; anything else gets a fresh one (PETSc 3.26's
``TSSetEvaluationTimes`` frees, and does not reallocate, its arrays when the count of
output times changes). When a call fails anywhere, its workspace is destroyed and the
next call builds a new one, so no half-finished PETSc state is ever reused.
"""
from petsc4py import PETSc

from .forms import Wiring
from .forms.blocks import MAX_BLOCK, block_shape, per_sample
from .forms.coloring import pattern
from .forms.jacobians import MassMatrix
from .parallel import hold_comm, new_vec


def _mass(implicit, layout):
    return MassMatrix(implicit.mass, layout) if implicit.mass is not None else None


class Workspace:
    """A TS wired to ``dyn`` (and ``dyn_ex``) with its solution and adjoint Vecs.

    Args:
        comm: PETSc communicator.
        prefix: options prefix of the TS (None for none).
        sizes: :class:`~pnode.parallel.Sizes`.
        form: ``rhs``, ``implicit`` or ``imex``.
        n_out: number of output times.
        dyn, dyn_ex: :class:`~pnode.dynamics.Dynamics` of ``func`` and of the explicit
            IMEX part (or None).
        trap: the solver's :class:`~pnode.errors.CallbackTrap`.
        reducer: the :class:`~pnode.parallel.Reducer`.
        implicit: the solver's :class:`~pnode.settings.ImplicitSettings` (mass, Jacobian, PC).
        post_step: ``post_step(ts)`` run after every accepted step.

    Attributes:
        ts, u, lam, mu: the TS, its solution Vec, the adjoint state Vec and the
            parameter-gradient Vec (None without parameters).
        key: the configuration this workspace serves.
    """

    def __init__(self, comm, prefix, sizes, form, n_out, dyn, dyn_ex, trap, reducer, implicit, pre_step, post_step):
        hold_comm(comm)
        mass = _mass(implicit, dyn.layout)
        blocks = self.blocks_of(dyn.layout, form, implicit, mass)
        sparse = self.sparse_of(dyn.layout, form, implicit)
        self.key = (sizes.key(), form, n_out, blocks, sparse and sparse[0])
        self.evaluations = None  # the count of output times PETSc was last given (it cannot change)
        self.sizes = sizes
        self.u = new_vec(comm, *sizes.state)
        self.lam = self.u.duplicate()
        self.mu = new_vec(comm, *sizes.params) if sizes.n_p else None
        ts = self.ts = PETSc.TS().create(comm=comm)
        if prefix:
            ts.setOptionsPrefix(prefix)
        ts.setProblemType(PETSc.TS.ProblemType.NONLINEAR)
        self.wiring = Wiring(ts, form, sizes, reducer, dyn, dyn_ex, trap, mass=mass,
                             dense=implicit.jacobian == "dense",
                             preconditioner=implicit.preconditioner, blocks=blocks, sparse=sparse,
                             linear=implicit.linear, large=self._large(dyn.layout, form, implicit, blocks))
        ts.setPreStep(trap.wrap(pre_step))
        ts.setPostStep(trap.wrap(post_step))
        ts.setExactFinalTime(PETSc.TS.ExactFinalTime.MATCHSTEP)

    @staticmethod
    def blocks_of(layout, form, implicit, mass=None):
        """``(B, d)`` when the default PC uses per-sample block Jacobians, else None."""
        choice = implicit.jacobian
        if form == "rhs" or choice not in ("auto", "block") or implicit.preconditioner is not None \
                or implicit.sparsity is not None:
            return None
        blocks = block_shape(layout, mass)
        if blocks is None and choice == "block":
            raise ValueError(f"options['jacobian']='block' needs per-sample blocks of at most {MAX_BLOCK} "
                             f"unknowns (and a per-sample mass matrix), not a state of shape "
                             f"{[tuple(s) for s in layout.shapes]}")
        return blocks

    @staticmethod
    def sparse_of(layout, form, implicit):
        """``((B, d), (rows, cols))`` when the Jacobian is assembled sparse by colouring
        (``options["sparsity"]``), else None."""
        if form == "rhs" or implicit.sparsity is None or per_sample(layout) is None:
            return None
        shape = per_sample(layout)
        return shape, pattern(implicit.sparsity, shape[1])

    @staticmethod
    def _large(layout, form, implicit, blocks):
        """``(B, d)`` when nothing but PETSc's options would precondition the implicit
        solve because the samples are too large for blocks (warned about), else None."""
        if form == "rhs" or blocks is not None or implicit.jacobian != "auto" or implicit.sparsity is not None \
                or implicit.preconditioner is not None or per_sample(layout) is None:
            return None
        shape = per_sample(layout)
        return shape if shape[1] > MAX_BLOCK else None

    @classmethod
    def key_of(cls, sizes, form, n_out, layout, implicit):
        """The configuration key a workspace is reusable for."""
        sparse = implicit.sparsity is not None and form != "rhs" and per_sample(layout)
        return (sizes.key(), form, n_out, cls.blocks_of(layout, form, implicit, _mass(implicit, layout)),
                sparse or None)

    def destroy(self):
        """Destroy every PETSc object (the workspace is unusable afterwards)."""
        self.wiring.forget()
        self.wiring.destroy()
        for obj in (self.ts, self.u, self.lam, self.mu):
            if obj is not None:
                obj.destroy()
        self.ts = self.u = self.lam = self.mu = None
