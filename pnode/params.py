"""Which tensors a solve differentiates with respect to, and a check that none is missed.

With ``adjoint_params`` given, those. Otherwise the parameters of ``func`` when it is an
``nn.Module``, and for a plain function, lambda, ``functools.partial``, bound method or
callable object, the parameters of the modules and the ``requires_grad`` tensors it
reaches: its closure, the globals it names, ``self`` of a bound method, the arguments of
a partial, and what those hold in lists, tuples, dicts and plain objects' attributes (a
few levels deep). So ``odeint(lambda t, y: net(y), y0, t)`` and
``params = {"W": W}; f = lambda t, y: torch.tanh(y @ params["W"])`` train what they use,
as torchdiffeq's backprop ``odeint`` does.

Discovery cannot see everything (a tensor built inside a function, an object reached
through a property). :func:`unseen` is the safety net: one evaluation of ``func`` with a
graph lists the ``requires_grad`` leaf tensors the output depends on that are not
differentiated; the solver then raises a ValueError naming ``adjoint_params`` instead of
leaving their gradients silently missing.
"""
import functools
import gc
import types
import weakref

import torch

_DEPTH = 4  # containers inside containers inside a closure: deep enough for real programs
_SKIP = (types.ModuleType, type, str, bytes, int, float, complex, bool, type(None))


def _referenced(func):
    """Objects a function refers to directly (closure cells, named globals)."""
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
    out.extend(getattr(func, "__defaults__", None) or ())
    out.extend((getattr(func, "__kwdefaults__", None) or {}).values())
    return out


def _children(obj):
    """What ``obj`` holds that may hold tensors, one level down."""
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, dict):
        return list(obj.values())
    if isinstance(obj, functools.partial):
        return [obj.func, *obj.args, *obj.keywords.values()]
    if isinstance(obj, types.MethodType):
        return [obj.__self__, obj.__func__]
    if isinstance(obj, types.FunctionType):
        return _referenced(obj)
    attrs = getattr(obj, "__dict__", None)
    if isinstance(attrs, dict):  # a plain object (a callable one too): its attributes
        return list(attrs.values())
    return []


def _tensors_of(root):
    """Tensors and module parameters reachable from ``root`` within :data:`_DEPTH` levels."""
    out, seen, frontier = [], set(), [root]
    for _ in range(_DEPTH + 1):
        nxt = []
        for obj in frontier:
            if id(obj) in seen or isinstance(obj, _SKIP):
                continue
            seen.add(id(obj))
            if isinstance(obj, torch.nn.Module):
                out.extend(obj.parameters())
            elif isinstance(obj, torch.Tensor):
                out.append(obj)
            else:
                nxt.extend(_children(obj))
        frontier = nxt
    return out


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
        found = [p for f in (func, func_explicit) if f is not None for p in _tensors_of(f)]
    seen, out = set(), []
    for p in found:
        if isinstance(p, torch.Tensor) and p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def unseen(fields, t, y, params):
    """What ``field(t, y)`` uses that needs a gradient pnode would not compute.

    One evaluation of each field with a graph (``y`` detached, so the state is no input)
    finds the ``requires_grad`` leaf tensors the output depends on that are neither in
    ``params`` nor reached through them. Leaves made inside the field (a CNF's
    ``z.requires_grad_()`` for its divergence) die with the output and are not the
    user's: only those still alive once the output is dropped (and reference cycles
    collected) are reported; ``t`` and
    ``y`` themselves never are, even where the field set their ``requires_grad``.

    Returns:
        ``(missing, error)``: descriptions (``"a tensor of shape (3, 3)"``) and the
        exception an evaluation raised (None if none); the caller raises it, after the
        ranks have agreed, as the solve itself would.
    """
    if not torch.is_grad_enabled():
        return [], None
    # the state (and time) pnode passes are pnode's own: a field that turns them into
    # leaves in place (ffjord's ``y.requires_grad_(True)`` before its divergence) does not
    # make them tensors the user forgot
    inputs = [t, *(y if isinstance(y, (tuple, list)) else (y,))]
    stop_leaf = {id(p) for p in params if p.grad_fn is None} | {id(v) for v in inputs}
    stop_node = [p.grad_fn for p in params if p.grad_fn is not None]
    found = []
    for field in fields:
        try:
            out = field(t, y)
        except Exception as exc:  # noqa: BLE001 - reported by the caller on every rank alike
            return [], exc
        outs = out if isinstance(out, (tuple, list)) else (out,)
        roots = [o.grad_fn for o in outs if isinstance(o, torch.Tensor) and o.grad_fn is not None]
        found.extend(weakref.ref(v) for v in _leaves(roots, stop_leaf, stop_node))
        del out, outs, roots
    alive = _alive(found)
    if alive:  # a leaf made inside the field may outlive it in a reference cycle (ffjord's
        del alive  # regularisers keep a Jacobian on a class made per call): collect, look again
        gc.collect()
        alive = _alive(found)
    return [f"a tensor of shape {tuple(v.shape)}" for v in alive], None


def _alive(refs):
    """The tensors behind the weak references ``refs`` that still exist, without duplicates."""
    return _unique([v for v in (ref() for ref in refs) if v is not None])


def _leaves(roots, stop_leaf, stop_node):
    """Leaf tensors (AccumulateGrad nodes) reachable from ``roots`` without passing through
    a differentiated parameter."""
    found, seen, stack = [], set(), list(roots)
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen or any(node is s for s in stop_node):
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if variable is not None:
            if id(variable) not in stop_leaf:
                found.append(variable)
            continue
        stack.extend(nxt for nxt, _ in node.next_functions)
    return found


def _unique(tensors):
    seen, out = set(), []
    for v in tensors:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out
