"""What every part of a wiring has: PETSc objects to destroy, Dynamics to rebind, and
the linearization point its Jacobian callbacks share."""
from ..bridge import vec_identity, vec_view
from ..shells import shell_mat


class Part:
    """Owns the Mats and Vecs it creates, and the Dynamics its callbacks evaluate."""

    def __init__(self, dyn, trap):
        self.dyn, self.trap = dyn, trap
        self.objects = []
        self._point = (None, None)  # ((s, vec_identity(U)), Linearization) of the last callback

    def linearize(self, s, U):
        """The Dynamics' :class:`~pnode.dynamics.Linearization` at ``(s, U)`` (None for a
        zero part).

        PETSc asks for the state and the parameter Jacobian at one point in turn: the same
        Vec at the same time, unchanged since (:func:`~pnode.bridge.vec_identity`), is the
        same point, found without reading its values.
        """
        if self.dyn is None:
            return None
        key = (s, vec_identity(U))
        if key == self._point[0] and self.dyn.nudge is None:
            return self._point[1]
        lin = self.dyn.linearize(s, vec_view(U, "r"))
        self._point = (key, lin)
        return lin

    def own(self, obj):
        """Keep ``obj`` (a Mat or Vec) for :meth:`destroy`; returns it."""
        self.objects.append(obj)
        return obj

    def shell(self, ctx, rows, cols, comm):
        """A Python shell Mat owned by this part."""
        return self.own(shell_mat(ctx, rows, cols, comm))

    def rebind(self, dyn):
        """Evaluate ``dyn`` from now on (a new call, same PETSc objects)."""
        self.dyn = dyn
        self._point = (None, None)

    def forget(self):
        """Drop the cached linearizations (graphs) of the Dynamics."""
        self._point = (None, None)
        if self.dyn is not None:
            self.dyn.forget()

    def destroy(self):
        for obj in self.objects:
            obj.destroy()
        self.objects = []
