"""Checkpoints that a kill during their writing cannot corrupt.

SpeechBrain 1.1.2's ``Checkpointer`` writes a checkpoint's ``CKPT.yaml`` first
and its parameter files after it, and a folder with a ``CKPT.yaml`` counts as a
checkpoint. A run killed (SIGKILL, out of memory, a preempted node) between the
two leaves a folder that looks complete; the next run picks it as the latest
and fails to load it, or loads a half-written file. Here the metadata file is
written under a temporary name and renamed into place last, so a checkpoint
exists only once all its files do, and an interrupted save is ignored.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from speechbrain.utils.checkpoints import Checkpoint, Checkpointer

__all__ = ["AtomicCheckpointer"]

_PARTIAL = ".partial"


class AtomicCheckpointer(Checkpointer):
    """SpeechBrain's ``Checkpointer``, with checkpoints that appear atomically.

    Same arguments and behaviour; see the module docstring for the difference.

    Example
    -------
    >>> import tempfile, torch
    >>> folder = tempfile.mkdtemp()
    >>> ckpt = AtomicCheckpointer(folder, {"model": torch.nn.Linear(2, 2)})
    >>> _ = ckpt.save_checkpoint()
    >>> len(ckpt.list_checkpoints())
    1
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[tuple[Path, Path]] = []

    def save_checkpoint(
        self,
        meta: dict | None = None,
        end_of_epoch: bool = True,
        name: str | None = None,
        verbosity: int = logging.INFO,
    ) -> Checkpoint | None:
        """Saves like ``Checkpointer.save_checkpoint``; the checkpoint becomes
        visible (its ``CKPT.yaml`` appears) after every file is written."""
        self._pending = []
        checkpoint = super().save_checkpoint(
            meta=meta or {}, end_of_epoch=end_of_epoch, name=name, verbosity=verbosity
        )
        for partial, final in self._pending:
            os.replace(partial, final)  # atomic on POSIX
        self._pending = []
        return checkpoint

    def _save_checkpoint_metafile(
        self, fpath, meta_to_include=None, end_of_epoch=True
    ) -> dict:
        # Called by save_checkpoint before the parameter files are written:
        # write under another name, renamed by save_checkpoint at the end.
        final = Path(fpath)
        partial = final.with_name(final.name + _PARTIAL)
        meta = super()._save_checkpoint_metafile(
            partial, meta_to_include or {}, end_of_epoch
        )
        self._pending.append((partial, final))
        return meta
