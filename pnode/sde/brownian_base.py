"""``BaseBrownian``: the interface of torchsde's Brownian motions, which ``sdeint``
accepts (any callable ``bm(ta, tb)`` works too)."""

import abc

__all__ = ["BaseBrownian"]


class BaseBrownian(metaclass=abc.ABCMeta):
    """A Brownian motion queried by interval.

    ``bm(ta, tb)`` returns ``W(tb) - W(ta)`` (shape :attr:`shape`); ``return_U=True``
    adds the space-time integral ``U``, ``return_A=True`` the Lévy area ``A``.
    """

    __slots__ = ()

    @abc.abstractmethod
    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        raise NotImplementedError

    @abc.abstractmethod
    def __repr__(self):
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def dtype(self):
        """dtype of the returned tensors."""

    @property
    @abc.abstractmethod
    def device(self):
        """device of the returned tensors."""

    @property
    @abc.abstractmethod
    def shape(self):
        """Shape of one increment."""

    @property
    @abc.abstractmethod
    def levy_area_approximation(self):
        """``"none"``, ``"space-time"``, ``"davie"`` or ``"foster"``."""

    def size(self):
        """Shape of one increment (torchsde spells it as a method)."""
        return self.shape
