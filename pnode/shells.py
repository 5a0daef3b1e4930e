"""Matrix-free PETSc Mats whose products come from torch autodiff.

:class:`JacobianShell` is ``a*M + b*J`` (``J = d f/d u`` at a captured point): the RHS
Jacobian is ``a=0, b=1``; an implicit method's IJacobian of ``F = M u' - f`` is
``a=shift, b=-1``. :class:`ParamJacobianShell` is ``c * d f/d p`` (``c=1`` for the RHS
form, ``-1`` for IJacobianP). Each shell computes from the point captured by its own
PETSc callback and the vector PETSc hands it. Exceptions raised inside the products
(the user's ``func`` failing in the backward pass, say) are kept by the solver's
:class:`~pnode.errors.CallbackTrap` and re-raised unchanged.
"""
import torch
from petsc4py import PETSc

from .bridge import vec_identity, vec_view, vec_write


class JacobianShell:
    """Python context of a shell Mat ``a*M + b*J(t, u)``.

    Args:
        trap: the solver's :class:`~pnode.errors.CallbackTrap`.
        b: coefficient of the Jacobian (+1 RHS form, -1 IFunction form).
        mass: optional :class:`~pnode.forms.jacobians.MassMatrix` (identity when None).
    """

    def __init__(self, trap, b=1.0, mass=None):
        self.lin = None
        self.mult = trap.wrap(self.mult)
        self.multTranspose = trap.wrap(self.multTranspose)
        self.a = 0.0
        self.b = b
        self.mass = mass
        # an assembled operator (BlockJacobianPC, SparseJacobian) whose verified matrix may
        # give the products: ``multiply(lin, shift, X, Y, transpose) -> bool``
        self.assembled = None

    def set_point(self, lin, shift=0.0):
        """Capture the linearization (None: zero) and, for IJacobian, the shift."""
        self.lin = lin
        self.a = shift

    def _mass_apply(self, x, transpose=False):
        return x if self.mass is None else self.mass.apply(x, transpose)

    def _apply(self, X, Y, transpose):
        if self.assembled is not None and self.lin is not None:  # IJacobian: a*M + b*J = shift*M - J
            if self.assembled.multiply(self.lin, self.a, X, Y, transpose):
                return
        x = vec_view(X, "r")
        if self.lin is None:  # the zero operator
            y = torch.zeros_like(x)
        else:
            y = self.lin.vjp(x, vec_identity(X)) if transpose else self.lin.jvp(x)
            if self.b != 1.0:
                y = self.b * y
        if self.a:
            y = y + self.a * self._mass_apply(x.to(y.device), transpose)
        vec_write(Y, y)

    def mult(self, mat, X, Y):
        self._apply(X, Y, False)

    def multTranspose(self, mat, X, Y):
        self._apply(X, Y, True)


class ParamJacobianShell:
    """Python context of the shell Mat ``c * d f/d p`` (only transpose products)."""

    def __init__(self, trap, c=1.0, reducer=None):
        self.lin = None
        self.c = c
        self.reducer = reducer
        self.trap = trap
        self.multTranspose = trap.wrap(self.multTranspose)

    def set_point(self, lin):
        """Capture the linearization of this callback (None: zero)."""
        self.lin = lin

    def _product(self, X):
        # PETSc's explicit adjoints hand this product the Vec the state product just had
        kept = self.lin.joint_for(vec_identity(X))
        if kept is not None:
            return kept
        if self.reducer is None:
            return self.lin.param_vjp(vec_view(X, "r"))
        try:
            return self.lin.param_vjp(vec_view(X, "r"))
        except BaseException as exc:
            # every rank must still join the reduction below, or the others wait in it
            # forever: this rank contributes NaN and raises once PETSc returns
            self.trap.keep(exc)
            return torch.full((sum(p.numel() for p in self.lin.dyn.params),), float("nan"),
                              dtype=torch.float64)

    def multTranspose(self, mat, X, Y):
        if self.lin is None:  # the zero operator
            Y.zeroEntries()
            return
        g = self._product(X)
        if self.reducer is not None:  # data parallel: sum the ranks' products on rank 0
            g = self.reducer.to_root(g)
            if g is None:
                return  # Y has no local entries here
        vec_write(Y, g if self.c == 1.0 else self.c * g)


def shell_mat(context, rows, cols, comm):
    """A Python shell Mat; ``rows``/``cols`` are (local, global) sizes."""
    mat = PETSc.Mat().createPython([rows, cols], context=context, comm=comm)
    mat.setUp()
    return mat
