"""torchsde's constant classes (``torchsde.settings``), so ``import pnode.sde as torchsde``
code that spells ``NOISE_TYPES.diagonal`` or tests ``method in METHODS`` keeps working.

Each class is a namespace of string constants; the metaclass makes the class itself
iterable-like: ``X.all()`` is the sorted list of values, ``value in X`` tests membership
and ``str(X)`` prints the list.
"""

__all__ = ["METHODS", "NOISE_TYPES", "SDE_TYPES", "LEVY_AREA_APPROXIMATIONS", "METHOD_OPTIONS"]


class ContainerMeta(type):
    """Metaclass of the constant namespaces: membership, listing and printing of values."""

    def all(cls):
        """The sorted values of the namespace's public attributes."""
        return sorted(getattr(cls, x) for x in dir(cls) if not x.startswith("__"))

    def __str__(cls):
        return str(cls.all())

    def __contains__(cls, item):
        return item in cls.all()


class METHODS(metaclass=ContainerMeta):
    """Method names ``sdeint(..., method=)`` accepts (``adjoint_reversible_heun`` only as
    an ``adjoint_method``)."""

    euler = "euler"
    milstein = "milstein"
    srk = "srk"
    midpoint = "midpoint"
    reversible_heun = "reversible_heun"
    adjoint_reversible_heun = "adjoint_reversible_heun"
    heun = "heun"
    log_ode_midpoint = "log_ode"
    euler_heun = "euler_heun"


class NOISE_TYPES(metaclass=ContainerMeta):  # noqa: N801 (torchsde's spelling)
    """Structure of the diffusion ``g`` (see :mod:`pnode.sde.functions` for shapes)."""

    general = "general"
    diagonal = "diagonal"
    scalar = "scalar"
    additive = "additive"


class SDE_TYPES(metaclass=ContainerMeta):  # noqa: N801
    """Interpretation of the stochastic integral."""

    ito = "ito"
    stratonovich = "stratonovich"


class LEVY_AREA_APPROXIMATIONS(metaclass=ContainerMeta):  # noqa: N801
    """What a Brownian motion returns besides increments: nothing, the space-time Lévy
    area, or that plus Davie's or Foster's approximation of the full Lévy area."""

    none = "none"
    space_time = "space-time"
    davie = "davie"
    foster = "foster"


class METHOD_OPTIONS(metaclass=ContainerMeta):  # noqa: N801
    """Keys of ``options``: ``grad_free`` (derivative-free Milstein)."""

    grad_free = "grad_free"
