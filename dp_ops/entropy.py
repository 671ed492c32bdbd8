"""Randomness for the exact samplers: raw uniform 64-bit words and exact uniform integers.

Production randomness comes only from the operating system's CSPRNG (``os.urandom``, which
is ``getrandom(2)`` on Linux). There is no seed anywhere on this path: a deterministic
source exists only as a test double inside the test suite.

Invariants:

* :class:`OsRandomBits` never hands out the same buffered word twice, never carries its
  buffer across ``fork`` (the buffer is tied to the process id that filled it) and cannot
  be pickled, so no generator state can be captured in a Spark UDF closure.
* :func:`uniform_below` returns exactly uniform integers: fields of raw bits are masked to
  the next power of two and out-of-range fields are rejected and redrawn, never reduced
  modulo the bound.
"""

from __future__ import annotations

import os
import threading
from typing import Any, NoReturn, Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_UNIFORM_BOUND", "OsRandomBits", "RandomBits", "uniform_below"]

#: Largest bound accepted by :func:`uniform_below` (results and masks stay inside int64).
MAX_UNIFORM_BOUND = 1 << 62


class RandomBits(Protocol):
    """A source of independent, uniformly distributed 64-bit words."""

    def uint64(self, size: int) -> npt.NDArray[np.uint64]:
        """Return ``size`` independent uniform 64-bit words (a fresh, writable array)."""
        ...


class _BufferState(threading.local):
    """Per-thread buffer of OS words, valid only in the process that filled it."""

    def __init__(self) -> None:
        self.pid = -1
        self.words: npt.NDArray[np.uint64] = np.empty(0, dtype=np.uint64)
        self.position = 0
        self.next_fill = OsRandomBits.FIRST_FILL_WORDS


def _os_words(size: int) -> npt.NDArray[np.uint64]:
    """``size`` fresh words straight from the OS CSPRNG."""
    return np.frombuffer(os.urandom(8 * size), dtype=np.uint64).copy()


class OsRandomBits:
    """Uniform words from the OS CSPRNG (``os.urandom`` / ``getrandom``), buffered for speed.

    Safe to create inside a Spark task (it holds no state that needs setting up). Each
    thread has its own buffer; a buffer filled in another process (after ``fork``) is
    discarded, never reused. Refuses to be pickled or copied.
    """

    #: Largest refill of the buffer (256 KiB); larger requests go straight to the OS.
    BUFFER_WORDS = 1 << 15
    #: First refill (8 KiB); each refill doubles up to BUFFER_WORDS, so a short-lived
    #: source (one per call) does not pay for a large read it never uses.
    FIRST_FILL_WORDS = 1 << 10

    def __init__(self) -> None:
        self._state = _BufferState()

    def uint64(self, size: int) -> npt.NDArray[np.uint64]:
        """Return ``size`` independent uniform 64-bit words; no word is ever returned twice."""
        size = int(size)
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        state = self._state
        pid = os.getpid()
        if state.pid != pid:
            # Never reuse words buffered by the parent of a fork (or not yet filled).
            state.pid = pid
            state.words = np.empty(0, dtype=np.uint64)
            state.position = 0
            state.next_fill = self.FIRST_FILL_WORDS
        if size > self.BUFFER_WORDS // 2:
            return _os_words(size)
        if state.position + size > state.words.size:
            # Unused words of the old buffer are dropped, never handed out later.
            fill = max(state.next_fill, size)
            state.next_fill = min(2 * state.next_fill, self.BUFFER_WORDS)
            state.words = _os_words(fill)
            state.position = 0
        start = state.position
        state.position = start + size
        return state.words[start : start + size].copy()

    def _refuse(self) -> NoReturn:
        raise TypeError(
            "OsRandomBits must not be pickled or copied: create it inside the task that draws"
        )

    def __reduce__(self) -> NoReturn:
        self._refuse()

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        self._refuse()

    def __getstate__(self) -> NoReturn:
        self._refuse()

    def __copy__(self) -> NoReturn:
        self._refuse()

    def __deepcopy__(self, memo: object) -> NoReturn:
        self._refuse()


def _random_fields(
    bits: RandomBits, width: int, count: int
) -> npt.NDArray[np.unsignedinteger[Any]]:
    """``count`` independent uniform ``width``-bit integers (1 <= width <= 64).

    Uniform words are reinterpreted as arrays of 1-, 8-, 16-, 32- or 64-bit containers
    (disjoint bit fields of uniform words are independent and uniform) and masked to
    ``width`` bits. The dtype is the smallest container that holds ``width`` bits.
    """
    if not 1 <= width <= 64:
        raise ValueError(f"width must be in [1, 64], got {width}")
    if width == 1:
        bytes_ = bits.uint64(-(-count // 64)).view(np.uint8)
        return np.unpackbits(bytes_)[:count]
    if width <= 8:
        fields8 = bits.uint64(-(-count // 8)).view(np.uint8)[:count]
        return np.bitwise_and(fields8, np.uint8((1 << width) - 1), out=fields8)
    if width <= 16:
        fields16 = bits.uint64(-(-count // 4)).view(np.uint16)[:count]
        return np.bitwise_and(fields16, np.uint16((1 << width) - 1), out=fields16)
    if width <= 32:
        fields32 = bits.uint64(-(-count // 2)).view(np.uint32)[:count]
        return np.bitwise_and(fields32, np.uint32((1 << width) - 1), out=fields32)
    fields64 = bits.uint64(count)
    return np.bitwise_and(fields64, np.uint64((1 << width) - 1), out=fields64)


def check_size(size: object) -> int:
    """``size`` as an int: an integer >= 0 (numpy integers accepted, booleans refused)."""
    if isinstance(size, bool) or not isinstance(size, int | np.integer):
        raise TypeError(f"size must be an integer, got {type(size).__name__}")
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    return int(size)


def _uniform_below_scalar(bits: RandomBits, bound: int, size: int) -> npt.NDArray[np.int64]:
    out = np.zeros(size, dtype=np.int64)
    if bound == 1 or size == 0:
        return out
    width = (bound - 1).bit_length()
    span = 1 << width  # bound <= span < 2 * bound: acceptance probability > 1/2
    filled = 0
    while filled < size:
        need = size - filled
        # Oversample by the expected rejection rate so one round usually suffices; the
        # accepted fields are i.i.d. uniform and the first `need` of them are kept.
        count = need * span // bound + 4 * int(need**0.5) + 8
        fields = _random_fields(bits, width, count)
        # bound == span: every field is in range; otherwise bound < span fits the dtype.
        accepted = fields if bound == span else fields[fields < fields.dtype.type(bound)]
        take = min(need, accepted.size)
        out[filled : filled + take] = accepted[:take].astype(np.int64)
        filled += take
    return out


def _uniform_below_array(
    bits: RandomBits, bound: npt.NDArray[np.int64], size: int
) -> npt.NDArray[np.int64]:
    if bound.shape != (size,):
        raise ValueError(f"bound array must have shape ({size},), got {bound.shape}")
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    if np.any(bound < 1) or np.any(bound > MAX_UNIFORM_BOUND):
        raise ValueError("every bound must be in [1, 2**62]")
    bounds = bound.astype(np.uint64)
    # mask_i = next power of two >= bound_i, minus one (exact integer bit smearing).
    mask = bounds - np.uint64(1)
    for shift in (1, 2, 4, 8, 16, 32):
        mask |= mask >> np.uint64(shift)
    width = max(1, int(bounds.max() - np.uint64(1)).bit_length())
    out = np.zeros(size, dtype=np.int64)
    pending = np.flatnonzero(bounds > np.uint64(1))
    while pending.size:
        # The low bits of a uniform field are uniform: mask per element, then reject.
        fields = _random_fields(bits, width, pending.size).astype(np.uint64) & mask[pending]
        ok = fields < bounds[pending]
        out[pending[ok]] = fields[ok].astype(np.int64)
        pending = pending[~ok]
    return out


def uniform_below(
    bits: RandomBits, bound: int | npt.NDArray[np.int64], size: int
) -> npt.NDArray[np.int64]:
    """Exactly uniform integers in ``[0, bound)``, as an int64 array of length ``size``.

    ``bound`` is a scalar or a per-element int64 array, ``1 <= bound <= 2**62``. Raw bits
    are masked to the next power of two and out-of-range values are rejected and redrawn
    (no modulo bias); ``bound == 1`` gives zeros without drawing.
    """
    size = check_size(size)
    if isinstance(bound, np.ndarray):
        return _uniform_below_array(bits, np.asarray(bound, dtype=np.int64), size)
    if isinstance(bound, bool) or not isinstance(bound, int | np.integer):
        raise TypeError(f"bound must be an integer or an int64 array, got {type(bound).__name__}")
    scalar = int(bound)
    if not 1 <= scalar <= MAX_UNIFORM_BOUND:
        raise ValueError(f"bound must be in [1, 2**62], got {scalar}")
    return _uniform_below_scalar(bits, scalar, size)
