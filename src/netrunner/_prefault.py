"""Fault in ``run()``'s big stdout buffer ahead of the reads (ADR 0004).

Collecting 1 GiB means writing 1 GiB of fresh memory, and on the VMs this
library is measured on, the first touch of a page costs more than copying
the data out of the pipe.  ``io.BytesIO`` zero-fills its buffer as it grows
(the ``memset`` that gives each new page its fault: 262,144 page faults,
one exception each, per GiB).  ``madvise(MADV_POPULATE_WRITE)`` (Linux
5.14) faults a whole range in from one system call instead: the same pages
and the same zeroing, without an exception per page; it measured about a
third less CPU per GiB collected (docs/performance.md, "Capture").

The buffer's memory comes from ``malloc``, which the standard library
cannot ``madvise``, so this goes through ``ctypes``, under these rules:

- **lazy, optional, and off for good at the first doubt**: ``ctypes`` is
  imported the first time a capture grows past :data:`PREFAULT_FROM`; if
  anything is missing (no ``ctypes``, no ``madvise``, a kernel older than
  5.14 answering ``EINVAL``) :func:`populate` returns False and the caller
  grows the buffer as it always did;
- **only the buffer's own pages**: the range given is inside the
  ``BytesIO``'s allocation (the caller takes its size from the object's
  ``__sizeof__``), shrunk to whole pages, so no page of any other object is
  touched.  ``MADV_POPULATE_WRITE`` never changes what memory holds (it
  only maps zero-filled pages where none were) and leaves no flag on the
  mapping behind: nothing to undo, no fd, no mapping of our own.
"""

from __future__ import annotations

import errno
import mmap
import sys
from collections.abc import Callable
from typing import Any

# Below this a capture grows as before (and never imports ctypes).  From
# 32 MiB on, BytesIO's 12.5 % over-allocation (4 MiB or more) exceeds a
# step, so a step costs at most one realloc, and glibc serves blocks this
# big with a mapping of their own (mremap to grow: no copy).
PREFAULT_FROM = 32 << 20
STEP = 1 << 20  # faulted in per call: the room for the next read, no more
MADV_POPULATE_WRITE = 23  # Linux >= 5.14, every architecture
PAGE = mmap.PAGESIZE

_madvise: Callable[[int, int, int], int] | None = None
_errno: Callable[[], int] | None = None
_address: Callable[[memoryview], int] | None = None
_state = "untried"  # -> "on" | "off"


def _load() -> bool:
    """Bind ``madvise`` and an address-of-buffer through ctypes; False (and
    the feature off for the process) when any part is missing."""
    global _madvise, _errno, _address, _state
    _state = "off"
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        fn: Any = ctypes.CDLL(None, use_errno=True).madvise
        fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        fn.restype = ctypes.c_int
        char = ctypes.c_char
        address_of = ctypes.addressof
    except (ImportError, OSError, AttributeError):
        return False

    def address(view: memoryview) -> int:
        # The ctypes object holds an export of the view only until it is
        # dropped, on return: the caller can release the view afterwards.
        return address_of(char.from_buffer(view))

    _madvise, _errno, _address, _state = fn, ctypes.get_errno, address, "on"
    return True


def populate(view: memoryview, start: int, end: int) -> bool:
    """Fault in the whole pages of ``[start, end)``, offsets from the start
    of ``view``'s buffer (``end`` may lie past ``len(view)`` but never past
    the allocation the view is the start of).  False when it could not:
    the caller then lets the zero-fill fault the pages in, as before."""
    global _state
    if _state != "on" and (_state == "off" or not _load()):
        return False
    assert _madvise is not None and _errno is not None and _address is not None
    try:
        base = _address(view)
    except (TypeError, ValueError, BufferError):
        return False
    lo = -(-(base + start) // PAGE) * PAGE  # whole pages only: round inwards
    hi = (base + end) // PAGE * PAGE
    if hi <= lo:
        return True
    if _madvise(lo, hi - lo, MADV_POPULATE_WRITE) != 0:
        if _errno() == errno.EINVAL:
            _state = "off"  # before Linux 5.14: do not ask again
        return False  # (ENOMEM, EINTR: this range only; the zero-fill does it)
    return True
