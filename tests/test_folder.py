"""Model folders: hostile folders are refused before anything of them runs.

Each hostile folder is an exported folder with one planted payload. The test
checks the one-line error names the planted line, that no object of the yaml
was built, and that the payload's side effect (a sentinel file) did not
happen; where the payload is a real attack, it also shows that HyperPyYAML
without the check does run it, so the test means something.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import hyperpyyaml
import pytest
import torch
from test_transcribe import export_test_model, speechlike

from hyperconformer import ModelFolderError, Transcriber
from hyperconformer.folder import check_hyperparams
from hyperconformer.transcribe import main

SENTINEL = "hc_sentinel"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return export_test_model(tmp_path_factory.mktemp("model"))


class CodeOnLoad:
    """Unpickling this runs ``touch``: what a malicious checkpoint does."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def plant_files(tmp: Path, sentinel: Path) -> dict[str, str]:
    """Files some payloads use: a pickle, a hub directory, a yaml to include."""
    torch.save({"x": CodeOnLoad(sentinel)}, tmp / "payload.pt")
    hub = tmp / "hub"
    hub.mkdir(exist_ok=True)
    (hub / "hubconf.py").write_text(
        f"import pathlib\npathlib.Path({str(sentinel)!r}).touch()\n"
        "def entry():\n    return 1\n"
    )
    (tmp / "other.yaml").write_text(f'y: !apply:os.system ["touch {sentinel}"]\n')
    return {
        "s": str(sentinel),
        "pt": str(tmp / "payload.pt"),
        "hub": str(hub),
        "tmp": str(tmp),
    }


# name -> (appended line, whether unchecked HyperPyYAML runs the payload)
ATTACKS = {
    "shell_inside_torch": ('__x: !apply:torch.utils.collect_env.run ["touch {s}"]', 1),
    "os_system": ('__x: !apply:os.system ["touch {s}"]', 1),
    "subprocess": ('__x: !new:subprocess.Popen [["touch", "{s}"]]', 0),
    "attribute_escape": ('__x: !apply:torch.os.system ["touch {s}"]', 1),
    "unpickle": ('__x: !apply:torch.load {{f: "{pt}", weights_only: false}}', 1),
    "write_file": ('__x: !apply:torch.save [[1, 2], "{s}"]', 1),
    "local_code": (
        '__x: !apply:torch.hub.load {{repo_or_dir: "{hub}", model: entry, '
        "source: local, trust_repo: true}}",
        1,
    ),
    "include": ("__x: !include:{tmp}/other.yaml", 1),
    "python_tag": ('__x: !!python/object/apply:os.system ["touch {s}"]', 1),
    "unknown_tag": ('__x: !shell "touch {s}"', 0),
    "tuple_smuggling": ('__x: (!!python/object/apply:os.system ["touch {s}"],)', 1),
    "module": ("__x: !module:os", 0),
    "outside_allow_list": ("__x: !new:torch.nn.Linear [2, 3]", 0),
    "ref_attribute": ("__x: !ref <tokenizer.Load>", 0),
    "ref_arithmetic": ("__x: !ref <sample_rate> ** 99", 0),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_hostile_yaml_is_refused_before_anything_runs(
    model_dir, tmp_path, monkeypatch, attack
):
    folder = shutil.copytree(model_dir, tmp_path / "model")
    sentinel = tmp_path / SENTINEL
    line = ATTACKS[attack][0].format(**plant_files(tmp_path, sentinel))
    text = (folder / "hyperparams.yaml").read_text().rstrip("\n") + "\n"
    planted_line = text.count("\n") + 1
    (folder / "hyperparams.yaml").write_text(text + line + "\n")
    built = []
    monkeypatch.setattr(
        "hyperconformer.folder.load_hyperpyyaml", lambda *a, **k: built.append(a)
    )
    with pytest.raises(ModelFolderError, match="refusing to load") as err:
        Transcriber.from_pretrained(folder)
    assert "\n" not in str(err.value)
    assert f"line {planted_line}:" in str(err.value)
    assert not built and not sentinel.exists()
    if ATTACKS[attack][1]:
        # Without the check the line does run its payload.
        hyperpyyaml.load_hyperpyyaml(line)
        assert sentinel.exists()


def test_the_cli_refuses_a_shell_command_inside_torch(model_dir, tmp_path, capsys):
    """The reported attack: transcription ran it and exited 0."""
    folder = shutil.copytree(model_dir, tmp_path / "model")
    sentinel = tmp_path / SENTINEL
    with open(folder / "hyperparams.yaml", "a") as fout:
        fout.write(f'\n__x: !apply:torch.utils.collect_env.run ["touch {sentinel}"]\n')
    wav = tmp_path / "a.wav"
    import soundfile

    soundfile.write(wav, speechlike(1.0), 16000)
    assert main(["--model", str(folder), str(wav)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "refusing to load" in err
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "node, argument",
    [
        # The tokenizer is loaded from tokenizer.ckpt only.
        ("tokenizer", "    model_file: {outside}"),
        ("pretrainer", "    paths:\n        model: ../outside/model.ckpt"),
        ("pretrainer", "    paths:\n        model: {outside}"),
        ("pretrainer", "    paths:\n        model: speechbrain/asr-crdnn/model.ckpt"),
        ("pretrainer", "    custom_hooks:\n        model: !name:torch.nn.GELU"),
    ],
)
def test_arguments_reaching_outside_the_folder_are_refused(
    model_dir, tmp_path, node, argument
):
    folder = shutil.copytree(model_dir, tmp_path / "model")
    outside = shutil.copy(model_dir / "tokenizer.ckpt", tmp_path / "outside.model")
    lines = (folder / "hyperparams.yaml").read_text().splitlines()
    at = next(i for i, text in enumerate(lines) if text.startswith(f"{node}:"))
    if lines[at + 1].startswith("    "):
        at += 1  # the node's first argument
    lines.insert(at + 1, argument.format(outside=outside))
    (folder / "hyperparams.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(ModelFolderError, match="refusing to load") as err:
        Transcriber.from_pretrained(folder)
    planted = range(at + 2, at + 3 + argument.count("\n"))  # its lines, from 1
    assert any(f"line {n}:" in str(err.value) for n in planted), str(err.value)


def test_exported_yaml_passes_and_names_in_the_folder_are_accepted(model_dir):
    text = (model_dir / "hyperparams.yaml").read_text()
    check_hyperparams(text)
    named = "    paths: {model: model.ckpt}\n    loadables:"
    check_hyperparams(text.replace("    loadables:", named))


@pytest.mark.parametrize("part", ["model.ckpt", "normalizer.ckpt"])
def test_pickled_code_in_checkpoint_is_refused(model_dir, tmp_path, part):
    folder = shutil.copytree(model_dir, tmp_path / "model")
    sentinel = tmp_path / SENTINEL
    state = torch.load(folder / part, weights_only=True)
    state["payload"] = CodeOnLoad(sentinel)
    torch.save(state, folder / part)
    with pytest.raises(ModelFolderError, match="refusing to load.*pickled"):
        Transcriber.from_pretrained(folder)
    assert not sentinel.exists()


def test_corrupt_or_mismatched_checkpoint(model_dir, tmp_path):
    folder = shutil.copytree(model_dir, tmp_path / "model")
    (folder / "model.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelFolderError, match="not a PyTorch checkpoint"):
        Transcriber.from_pretrained(folder)
    state = torch.load(model_dir / "model.ckpt", weights_only=True)
    state["3.w.weight"] = state["3.w.weight"][:-1]
    torch.save(state, folder / "model.ckpt")
    with pytest.raises(ModelFolderError, match="does not fit hyperparams.yaml"):
        Transcriber.from_pretrained(folder)
    (folder / "tokenizer.ckpt").write_bytes(b"garbage")
    shutil.copy(model_dir / "model.ckpt", folder / "model.ckpt")
    with pytest.raises(ModelFolderError, match="not a SentencePiece model"):
        Transcriber.from_pretrained(folder)
