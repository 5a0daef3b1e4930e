"""PETSc's printing through Python's ``sys.stdout``/``sys.stderr``.

PETSc prints (``-ts_monitor``, ``-ksp_converged_reason``, viewers, error messages) through
its replaceable ``PetscVFPrintf``; pnode replaces it with a function that formats the
message with the C library's ``vsnprintf`` and writes it to Python's stream, so the output
appears where Python's would: in a notebook cell, in a redirected ``sys.stdout``, in
order with ``print``. Output to other files is written to them unchanged. The original is
restored when Python exits (PETSc finalises after the interpreter). Set
``PNODE_PETSC_PRINT=c`` to leave PETSc's printing alone.
"""
import atexit
import ctypes
import os
import platform
import sys

from .petsc_c import libpetsc

_BUF = 1 << 16
_SUPPORTED = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "aarch64")
_state = {}


def _libc():
    return ctypes.CDLL(None)


def _write(stream, text):
    try:
        stream.write(text)
        stream.flush()
    except Exception:  # a closed or broken stream must not break PETSc
        pass


def install():
    """Route PETSc's printing to ``sys.stdout``/``sys.stderr`` (once per process)."""
    if _state or not _SUPPORTED or os.environ.get("PNODE_PETSC_PRINT") == "c":
        return
    lib, libc = libpetsc(), _libc()
    slot = ctypes.c_void_p.in_dll(lib, "PetscVFPrintf")
    c_stdout = ctypes.c_void_p.in_dll(libc, "stdout").value
    c_stderr = ctypes.c_void_p.in_dll(libc, "stderr").value
    libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
    libc.fputs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    buf = ctypes.create_string_buffer(_BUF)
    proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)

    def vfprintf(fp, fmt, ap):  # va_list arrives as a pointer on x86-64 and aarch64
        try:
            n = libc.vsnprintf(buf, _BUF, fmt, ap)
            if n < 0:
                return 0
            data = buf.raw[:min(n, _BUF - 1)]
            if fp == c_stdout:
                _write(sys.stdout, data.decode("utf-8", "replace"))
            elif fp == c_stderr:
                _write(sys.stderr, data.decode("utf-8", "replace"))
            else:
                libc.fputs(data, fp)
        except Exception:
            pass
        return 0

    _state.update(original=slot.value, callback=proto(vfprintf), slot=slot, buf=buf)
    slot.value = ctypes.cast(_state["callback"], ctypes.c_void_p).value
    atexit.register(restore)


def restore():
    """Give PETSc back its own ``PetscVFPrintf`` (before the interpreter shuts down)."""
    if _state.get("slot") is not None:
        _state["slot"].value = _state["original"]
        _state["slot"] = None
