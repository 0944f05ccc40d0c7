"""A process killed while it writes a checkpoint leaves no checkpoint behind."""

import subprocess
import sys
import textwrap

import torch
from speechbrain.utils.checkpoints import Checkpointer

from hyperconformer import AtomicCheckpointer

# Saves one checkpoint of weights 1, then a second one of weights 2 that is
# killed (SIGKILL) after the metadata and the model are written, before the
# last recoverable is.
KILLED_WHILE_SAVING = textwrap.dedent(
    """
    import os, signal, sys, torch
    from speechbrain.utils import checkpoints as ck
    from hyperconformer import AtomicCheckpointer

    @ck.register_checkpoint_hooks
    class Last:
        kill = False

        @ck.mark_as_saver
        def save(self, path):
            if self.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            open(path, "w").write("done")

        @ck.mark_as_loader
        def load(self, path, end_of_epoch):
            assert open(path).read() == "done"

    cls = {"atomic": AtomicCheckpointer, "speechbrain": ck.Checkpointer}[sys.argv[2]]
    model, last = torch.nn.Linear(2, 2), Last()
    checkpointer = cls(sys.argv[1], {"model": model, "zlast": last})
    torch.nn.init.constant_(model.weight, 1.0)
    checkpointer.save_checkpoint(name="first")
    torch.nn.init.constant_(model.weight, 2.0)
    last.kill = True
    checkpointer.save_checkpoint(name="second")
    """
)


def killed_while_saving(folder, kind):
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_WHILE_SAVING, str(folder), kind],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr


def test_interrupted_save_is_ignored_on_recovery(tmp_path):
    killed_while_saving(tmp_path, "atomic")
    model = torch.nn.Linear(2, 2)
    checkpointer = AtomicCheckpointer(tmp_path, {"model": model})
    assert [c.path.name for c in checkpointer.list_checkpoints()] == ["CKPT+first"]
    checkpointer.recover_if_possible()
    assert torch.equal(model.weight, torch.ones(2, 2))


def test_speechbrain_checkpointer_keeps_the_interrupted_save(tmp_path):
    # Why AtomicCheckpointer exists: SpeechBrain writes CKPT.yaml first, so
    # the half-written checkpoint is the one a resumed run picks.
    killed_while_saving(tmp_path, "speechbrain")
    model = torch.nn.Linear(2, 2)
    checkpointer = Checkpointer(tmp_path, {"model": model})
    latest = checkpointer.find_checkpoint()
    assert latest.path.name == "CKPT+second"
    assert "zlast" not in latest.paramfiles  # never written
