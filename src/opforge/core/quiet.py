"""Keeping TVM's and LLVM's own messages away from the user unless asked for (-v).

TVM's C++ logger and LLVM write straight to file descriptor 2, past Python's sys.stderr: `quiet_native()` points
fd 2 at a temporary file for the duration of a block and, when verbose, replays what was caught. Python warnings
raised inside the block are dropped unless verbose.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator


def verbose() -> bool:
    """Whether the user asked for detail (`-v` sets the root logger to DEBUG)."""
    return logging.getLogger().isEnabledFor(logging.DEBUG)


@contextlib.contextmanager
def quiet_native() -> Iterator[None]:
    """Silence fd 2 and Python warnings inside the block, unless verbose (then everything passes through)."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (daemonised): nothing to silence
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
        return
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
