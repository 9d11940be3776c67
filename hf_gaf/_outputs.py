"""Claiming what a command will write, before its work starts: an earlier result is never replaced without
the command's overwrite flag, and a folder that cannot take the results stops the command at once rather
than after an hour of benchmarking. Standard library only, so the benchmark scripts that run on a bare GPU
machine (``recipes/gpu_check.py``) use it without the ``recipes`` extra that :mod:`hf_gaf.harness` needs.

Example:
    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> claim_outputs([os.path.join(folder, "report.json")], overwrite=False)  # nothing there yet: fine
    >>> open(os.path.join(folder, "report.json"), "w").close()
    >>> claim_outputs([os.path.join(folder, "report.json")], overwrite=False)
    Traceback (most recent call last):
    ...
    SystemExit: error: ... already exists (an earlier run's results); choose another --out or pass --overwrite
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable


def unwritable(folder: str | os.PathLike) -> str | None:
    """Make ``folder`` (and its parents) and write a temporary file there: ``None`` when both work, else why
    not (the system's words)."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return err.strerror
    return None


def check_writable(folder: str, what: str) -> None:
    """:func:`unwritable` as a ``SystemExit`` naming ``what`` (the flag and value the folder came from)."""
    why = unwritable(folder)
    if why is not None:
        raise SystemExit(f"error: {what} is not writable ({why}); results could not be saved")


def claim_outputs(paths: Iterable[str | os.PathLike], overwrite: bool, flag: str = "--overwrite",
                  out_flag: str = "--out") -> None:
    """Before the work: none of ``paths`` (the files and folders a command writes) may exist unless
    ``overwrite`` (the command's ``flag``), and each one's folder must take a file (:func:`check_writable`).
    Everything is checked before anything is written; the error names every path already there."""
    paths = [os.fspath(p) for p in paths]
    taken = [p for p in paths if os.path.lexists(p)]
    if taken and not overwrite:
        listed = ", ".join(taken)
        raise SystemExit(f"error: {listed} already exists (an earlier run's results); choose another {out_flag} "
                         f"or pass {flag}")
    for folder in dict.fromkeys(os.path.dirname(os.path.abspath(p)) for p in paths):
        check_writable(folder, f"{out_flag} (folder {folder})")
