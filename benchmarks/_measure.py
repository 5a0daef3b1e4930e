"""Measurement helpers shared by the benchmark scripts: memory of this process and
the machine's name."""
import ctypes
import os
import platform
import threading


def anon_kb():
    """Anonymous resident memory (heap, tensors, PETSc Vecs) of this process, in KiB.

    File-backed pages (the code of libtorch and PETSc) are left out: they are not the
    solver's data, and the kernel may drop and re-read them at any time.
    """
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise RuntimeError("no RssAnon in /proc/self/status")


def trim_heap():
    """Give freed heap pages back to the OS, so the baseline is live memory only."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


class PeakSampler:
    """Peak of the anonymous RSS while the ``with`` body runs, sampled from a thread.

    Linux keeps no high-water mark for anonymous memory alone; the interpreter switches
    threads every 5 ms, far more often than a solve's memory changes shape. The sampler
    reads into one preallocated buffer, so that its own malloc calls do not land between
    the solver's at timing-dependent points and change the heap's fragmentation.
    """

    def __enter__(self):
        self._fd = os.open("/proc/self/status", os.O_RDONLY)
        self._buf = bytearray(8192)
        self.peak = self._read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _read(self):
        n = os.preadv(self._fd, [self._buf], 0)
        i = self._buf.find(b"RssAnon:", 0, n)
        return int(self._buf[i + 8:self._buf.find(b"kB", i, n)])

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._read())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._read())
        os.close(self._fd)


def cpu_name():
    """The processor's model name (for the benchmark pages)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()
