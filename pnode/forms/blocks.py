"""Per-sample block Jacobians as the preconditioner of the matrix-free Newton-Krylov solve.

A batched state ``(B, ...)`` whose field acts on each sample independently (the usual
neural ODE) has a block-diagonal Jacobian: B blocks of size ``d = numel / B``. With
``d`` vector-Jacobian products (one batched backward pass), each pulling the k-th unit
vector back through every sample at once, the k-th row of every block comes out of one
product. ``shift*M_b - J_b`` is factored by torch's batched LU (CPU or CUDA alike) and
applied, or its transpose for the adjoint's transposed solves, as the PC of GMRES.

The Krylov operator is the exact matrix-free ``shift*M - J`` unless the blocks are
verified to be the whole Jacobian (once per call: one random product against the
matrix-free one, to round-off), in which case the operator's products use the blocks
too and GMRES converges in one iteration without a single JVP. So the solution and the
gradient are exact whatever the field does: a field that couples samples (batch norm,
attention over the batch) fails the check, keeps the matrix-free operator, and the
blocks only precondition it (GMRES takes a few more iterations).
"""
import torch

from ..bridge import vec_view, vec_write

MAX_BLOCK = 64  # larger blocks: d JVPs per Jacobian and an O(d^3) factorisation cost too much


def per_sample(layout):
    """``(B, d)``: a tensor state ``(B, ...)`` of two or more dimensions is B samples of
    ``d`` unknowns; anything else is one sample. None for an empty state."""
    n = layout.numel
    if n == 0:
        return None
    shape = layout.shapes[0]
    batch = shape[0] if (not layout.is_tuple and len(shape) >= 2 and shape[0] > 0) else 1
    return batch, n // batch


def block_shape(layout, mass=None):
    """``(B, d)`` of the per-sample blocks of a state layout, or None when the blocks
    would be too large (or a full mass matrix couples the samples)."""
    if per_sample(layout) is None:
        return None
    batch, d = per_sample(layout)
    if d > MAX_BLOCK or (mass is not None and tuple(mass.m.shape) != (d, d)):
        return None
    return batch, d


class BlockJacobianPC:
    """PETSc Python PC: ``(shift*M_b - J_b)^{-1}`` per sample block.

    Args:
        shape: ``(B, d)`` from :func:`block_shape`.
        mass: :class:`~pnode.forms.jacobians.MassMatrix` or None (identity).
        trap: the solver's :class:`~pnode.errors.CallbackTrap`.
    """

    def __init__(self, shape, mass, trap):
        self.B, self.d = shape
        self.mass = mass
        self.point = None
        self._lu = None
        self._jac = None  # (Linearization, its (B, d, d) Jacobian blocks)
        self.exact = None  # whether the blocks are the whole Jacobian (checked once per call)
        self.apply = trap.wrap(self.apply)
        self.applyTranspose = trap.wrap(self.applyTranspose)

    def set_point(self, lin, shift):
        """The linearization and shift of the last IJacobian (factored on first use:
        PETSc also asks for IJacobians it only multiplies with); the factors are kept at
        the same point and shift (a linear part hands the same point every stage)."""
        if self.point is not None and self.point[0] is lin and self.point[1] == shift:
            return
        self.point = (lin, shift)
        self._lu = None

    def new_call(self):
        """A new call: check the block structure again. (Not ``reset``: PETSc calls a
        Python PC's ``reset(pc)`` itself.)"""
        self.exact = None
        self.point = self._lu = self._jac = None

    def _jacobians(self, lin):
        """``(B, d, d)``: row k of every block is ``J^T`` of the k-th unit vector
        repeated over the samples: d vector-Jacobian products in one batched backward."""
        B, d = self.B, self.d
        # made where the model runs: on the host (u64's side) it would be a (d, n) copy to
        # the device at every Jacobian
        lay = lin.dyn.layout
        E = torch.eye(d, dtype=lay.dtype, device=lay.device)
        E = E.reshape(d, 1, d).expand(d, B, d).reshape(d, B * d)
        return lin.vjp_rows(E).reshape(d, B, d).permute(1, 0, 2)

    def _blocks(self):
        lin, shift = self.point
        if self._jac is None or self._jac[0] is not lin:  # a new shift alone needs no new VJPs
            self._jac = (lin, self._jacobians(lin))
        jac = self._jac[1]
        m = torch.eye(self.d, dtype=jac.dtype) if self.mass is None else self.mass.m  # (d, d) per sample
        return shift * m.to(jac.device) - jac

    def _factor(self):
        if self._lu is None:
            A = self._blocks()
            self._lu = (A,) + tuple(torch.linalg.lu_factor(A))

    def _check(self, lin, shift, A):
        """Whether ``A`` is the whole of ``shift*M - J``: one random product."""
        g = torch.Generator(device="cpu").manual_seed(1234)
        v = torch.randn(self.B, self.d, 1, generator=g, dtype=A.dtype).to(A.device)
        m = torch.eye(self.d, dtype=A.dtype) if self.mass is None else self.mass.m
        free = shift * (m.to(A.device) @ v) - lin.jvp(v.reshape(-1)).reshape(self.B, self.d, 1)
        tol = 1e-10 if lin.dyn.layout.dtype == torch.float64 else 1e-4
        return float((A @ v - free).norm()) <= tol * float(free.norm()) + 1e-300

    def product(self, lin, shift, x, transpose):
        """``(shift*M - J) x`` (or its transpose) from the blocks, when they are built at
        this very point and verified to be the whole Jacobian; else None."""
        if self._lu is None or self.point[0] is not lin or self.point[1] != shift:
            return None
        A = self._lu[0]
        if self.exact is None:
            self.exact = self._check(lin, shift, A)
        if not self.exact:
            return None
        Ab = A.transpose(-1, -2) if transpose else A
        return (Ab @ x.reshape(self.B, self.d, 1).to(A.device)).reshape(-1)

    def multiply(self, lin, shift, X, Y, transpose):
        """:meth:`product` between Vecs; False (nothing written) when it gives None."""
        y = self.product(lin, shift, vec_view(X, "r"), transpose)
        if y is None:
            return False
        vec_write(Y, y)
        return True

    def _solve(self, X, Y, transpose):
        self._factor()
        x = vec_view(X, "r").reshape(self.B, self.d, 1)
        y = torch.linalg.lu_solve(*self._lu[1:], x.to(self._lu[0].device), adjoint=transpose)
        vec_write(Y, y.reshape(-1))

    def apply(self, pc, X, Y):
        self._solve(X, Y, False)

    def applyTranspose(self, pc, X, Y):
        self._solve(X, Y, True)
