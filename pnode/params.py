"""Which tensors a solve differentiates with respect to.

With ``adjoint_params`` given, those. Otherwise the parameters of ``func`` when it is an
``nn.Module``, and for a plain function or lambda the parameters of the modules (and the
``requires_grad`` tensors) it refers to: its closure, the globals it names, and ``self``
of a bound method. So ``odeint(lambda t, y: net(y), y0, t)`` trains ``net`` as it does
under torchdiffeq's backprop ``odeint``, instead of silently leaving it without a
gradient.
"""
import types

import torch


def _referenced(func):
    """Objects ``func`` refers to directly (closure cells, named globals, bound self)."""
    if isinstance(func, types.MethodType):
        return [func.__self__] + _referenced(func.__func__)
    code = getattr(func, "__code__", None)
    if code is None:
        return []
    out = []
    for cell in getattr(func, "__closure__", None) or ():
        try:
            out.append(cell.cell_contents)
        except ValueError:  # an empty cell
            pass
    names = set(code.co_names)
    for const in code.co_consts:  # names used by nested functions and comprehensions
        if isinstance(const, types.CodeType):
            names.update(const.co_names)
    globs = getattr(func, "__globals__", {})
    out.extend(globs[n] for n in names if n in globs)
    return out


def _tensors_of(obj):
    if isinstance(obj, torch.nn.Module):
        return list(obj.parameters())
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for x in obj if isinstance(x, (torch.nn.Module, torch.Tensor)) for t in _tensors_of(x)]
    return []


def differentiated(func, func_explicit=None, adjoint_params=None):
    """The ``requires_grad`` tensors of a solve, without duplicates, in a stable order.

    Args:
        func: the vector field (``nn.Module`` or callable).
        func_explicit: the explicit IMEX part, or None.
        adjoint_params: the user's explicit list, or None to find them.
    """
    if adjoint_params is not None:
        found = list(adjoint_params)
    else:
        found = []
        for f in (func, func_explicit):
            if f is None:
                continue
            objs = [f] if isinstance(f, torch.nn.Module) else _referenced(f)
            for obj in objs:
                found.extend(_tensors_of(obj))
    seen, out = set(), []
    for p in found:
        if isinstance(p, torch.Tensor) and p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out
