"""Type aliases of torchsde's public signatures (``torchsde.types``), for code that
annotates with them."""

from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union  # noqa: F401

import torch
from torch import nn

Tensor = torch.Tensor
Tensors = Sequence[Tensor]
TensorOrTensors = Union[Tensor, Tensors]
Scalar = Union[float, Tensor]
Vector = Union[Sequence[float], Tensor]
Module = nn.Module
Modules = Sequence[nn.Module]
ModuleOrModules = Union[Module, Modules]
Size = torch.Size
Sizes = Sequence[Size]
