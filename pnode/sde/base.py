"""Base classes for user SDEs, torchsde's ``BaseSDE``, ``SDEIto`` and ``SDEStratonovich``.

An SDE is any object with ``noise_type`` and ``sde_type`` attributes and a drift and
diffusion (see :mod:`pnode.sde.functions`); these ``nn.Module`` bases only check the two
attributes at construction.
"""

from torch import nn

from .settings import NOISE_TYPES, SDE_TYPES

__all__ = ["BaseSDE", "SDEIto", "SDEStratonovich"]


class BaseSDE(nn.Module):
    """An ``nn.Module`` SDE with checked ``noise_type`` and ``sde_type``.

    Args:
        noise_type: one of ``NOISE_TYPES`` (``"diagonal"``, ``"additive"``, ``"scalar"``,
            ``"general"``).
        sde_type: ``"ito"`` or ``"stratonovich"``.

    Raises:
        ValueError: naming the argument, when either is not a known value.
    """

    def __init__(self, noise_type, sde_type):
        super().__init__()
        if noise_type not in NOISE_TYPES:
            raise ValueError(f"noise_type must be one of {NOISE_TYPES}, got {noise_type!r}")
        if sde_type not in SDE_TYPES:
            raise ValueError(f"sde_type must be one of {SDE_TYPES}, got {sde_type!r}")
        self.noise_type = noise_type
        self.sde_type = sde_type


class SDEIto(BaseSDE):
    """An Itô SDE module (``sde_type="ito"``)."""

    def __init__(self, noise_type):
        super().__init__(noise_type=noise_type, sde_type=SDE_TYPES.ito)


class SDEStratonovich(BaseSDE):
    """A Stratonovich SDE module (``sde_type="stratonovich"``)."""

    def __init__(self, noise_type):
        super().__init__(noise_type=noise_type, sde_type=SDE_TYPES.stratonovich)
