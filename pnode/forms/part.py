"""What every part of a wiring has: PETSc objects to destroy, Dynamics to rebind."""
from ..shells import shell_mat


class Part:
    """Owns the Mats and Vecs it creates, and the Dynamics its callbacks evaluate."""

    def __init__(self, dyn, trap):
        self.dyn, self.trap = dyn, trap
        self.objects = []

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

    def forget(self):
        """Drop the cached linearizations (graphs) of the Dynamics."""
        if self.dyn is not None:
            self.dyn.forget()

    def destroy(self):
        for obj in self.objects:
            obj.destroy()
        self.objects = []
