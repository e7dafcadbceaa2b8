"""Resume survives a damaged checkpoint (issue 12, item 7): manifest at save time, verified on resume,
fallback to the newest intact checkpoint with a warning, and the resumed run still exact."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_training import config, inputs, metrics  # noqa: F401 (inputs is a fixture)

from multipl_moe.training import TrainConfigError
from multipl_moe.training.trainer import train

ARGS = ("steps=8", "save_every=2", "keep_last=2", "optim.warmup_steps=2", "model.variant=hybrid-batch",
        "model.upcycle_noise_std=0.01")


@pytest.fixture(scope="module")
def finished(inputs, tmp_path_factory):  # noqa: F811
    """A complete 8-step run: checkpoints step-6 and step-8, the final model and its metrics."""
    out = tmp_path_factory.mktemp("integrity") / "run"
    train(config(inputs, out, *ARGS))
    return out


def interrupted_copy(finished: Path, dest: Path) -> Path:
    """The run as if it had been killed after its last checkpoint, before the final model."""
    shutil.copytree(finished, dest)
    shutil.rmtree(dest / "final")
    return dest


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def same_final(a: Path, b: Path) -> bool:
    x, y = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_every_checkpoint_has_a_manifest_of_all_its_files(finished):
    ckpts = sorted((finished / "checkpoints").glob("step-*"))
    assert [p.name for p in ckpts] == ["step-000006", "step-000008"]
    for ckpt in ckpts:
        manifest = json.loads((ckpt / "manifest.json").read_text())["files"]
        on_disk = {p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file()} - {"manifest.json"}
        assert set(manifest) == on_disk
        assert {"model.safetensors", "optimizer.bin", "trainer_state.json", "random_states_0.pkl"} <= on_disk
        for name, entry in manifest.items():
            data = (ckpt / name).read_bytes()
            assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("damaged", ["model.safetensors", "optimizer.bin", "trainer_state.json",
                                     "random_states_0.pkl"])
def test_truncated_file_in_latest_checkpoint_falls_back_exactly(damaged, finished, inputs,  # noqa: F811
                                                                 tmp_path, capsys):
    run = interrupted_copy(finished, tmp_path / "run")
    truncate(run / "checkpoints" / "step-000008" / damaged)
    capsys.readouterr()
    train(config(inputs, run, *ARGS), resume=True)
    captured = capsys.readouterr()
    assert "resumed from" in captured.out and "step-000006 at step 6" in captured.out
    warning = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "step-000008 is damaged" in warning[0] and damaged in warning[0], captured.err
    assert (run / "checkpoints" / "damaged-step-000008" / damaged).is_file()  # kept for inspection
    assert metrics(run) == metrics(finished)
    assert same_final(run, finished)
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-000006", "step-000008"]


def test_corruption_that_keeps_the_size_is_caught_by_the_checksum(finished, inputs, tmp_path, capsys):  # noqa: F811
    run = interrupted_copy(finished, tmp_path / "run")
    path = run / "checkpoints" / "step-000008" / "optimizer.bin"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    train(config(inputs, run, *ARGS), resume=True)
    captured = capsys.readouterr()
    assert "optimizer.bin does not match its checksum" in captured.err
    assert metrics(run) == metrics(finished) and same_final(run, finished)


def test_old_checkpoints_without_manifest_are_verified_by_loading(finished, inputs, tmp_path, capsys):  # noqa: F811
    run = interrupted_copy(finished, tmp_path / "run")
    for manifest in (run / "checkpoints").glob("step-*/manifest.json"):
        manifest.unlink()
    truncate(run / "checkpoints" / "step-000008" / "random_states_0.pkl")
    capsys.readouterr()
    train(config(inputs, run, *ARGS), resume=True)
    captured = capsys.readouterr()
    assert "step-000006 has no manifest.json" in captured.err and "verified by loading" in captured.err
    assert "step-000008 is damaged (random_states_0.pkl cannot be loaded" in captured.err
    assert metrics(run) == metrics(finished) and same_final(run, finished)


def test_intact_old_checkpoint_resumes_with_a_warning(finished, inputs, tmp_path, capsys):  # noqa: F811
    run = interrupted_copy(finished, tmp_path / "run")
    for manifest in (run / "checkpoints").glob("step-*/manifest.json"):
        manifest.unlink()
    capsys.readouterr()
    train(config(inputs, run, *ARGS), resume=True)
    captured = capsys.readouterr()
    assert "step-000008 at step 8" in captured.out
    assert "step-000008 has no manifest.json" in captured.err and "damaged" not in captured.err
    assert same_final(run, finished)


def test_no_intact_checkpoint_is_a_one_line_error_naming_each(finished, inputs, tmp_path):  # noqa: F811
    run = interrupted_copy(finished, tmp_path / "run")
    truncate(run / "checkpoints" / "step-000008" / "optimizer.bin")
    (run / "checkpoints" / "step-000006" / "model.safetensors").unlink()
    with pytest.raises(TrainConfigError) as err:
        train(config(inputs, run, *ARGS), resume=True)
    message = str(err.value)
    assert "\n" not in message and "no intact checkpoint" in message
    assert "step-000008: optimizer.bin has" in message and "step-000006: model.safetensors is missing" in message
    # nothing was set aside or started over: the user decides
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000006", "step-000008"]


def test_lost_random_state_is_reported(finished, tmp_path):
    """Accelerate swallows a failed RNG restore; the trainer compares the generator with the file."""
    from multipl_moe.training.checkpoints import rng_restored

    ckpt = finished / "checkpoints" / "step-000008"
    saved = torch.load(ckpt / "random_states_0.pkl", weights_only=False)["torch_manual_seed"]
    before = torch.get_rng_state()
    try:
        torch.set_rng_state(saved)
        assert rng_restored(ckpt, 0) is None
        torch.rand(1)
        assert "did not restore" in rng_restored(ckpt, 0)
        assert "no random_states_1.pkl" in rng_restored(ckpt, 1)
    finally:
        torch.set_rng_state(before)
