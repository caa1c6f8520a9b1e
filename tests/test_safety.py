"""Safe loading: weights only from safetensors, no unpickling of planted files, no remote code
unless asked for."""

from __future__ import annotations

import builtins
import json
import pickle
import shutil
from pathlib import Path

import pytest
from conftest import make_tiny_model

from knowtune.errors import KnowtuneError, ModelError
from knowtune.models import load_model
from knowtune.train.examples import SFTExample
from knowtune.train.sft_config import SFTConfig
from knowtune.train.sft_trainer import train_sft


class Planted:
    """Unpickling this object creates `marker`: proof that a pickle ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


def plant(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(Planted(marker)))


def test_model_dir_with_only_pickled_weights_is_refused(tiny_workdir, tmp_path):
    model_dir, marker = tmp_path / "model", tmp_path / "ran"
    shutil.copytree(tiny_workdir / "model", model_dir)
    (model_dir / "model.safetensors").unlink()
    plant(model_dir / "pytorch_model.bin", marker)
    with pytest.raises(ModelError, match=r"no \.safetensors weights \(found pytorch_model\.bin: pickle files"):
        load_model(str(model_dir))
    assert not marker.exists()


def test_pickle_posing_as_safetensors_is_refused(tiny_workdir, tmp_path):
    model_dir, marker = tmp_path / "model", tmp_path / "ran"
    shutil.copytree(tiny_workdir / "model", model_dir)
    plant(model_dir / "model.safetensors", marker)
    with pytest.raises(ModelError, match="corrupt or truncated safetensors"):
        load_model(str(model_dir))
    assert not marker.exists()


@pytest.mark.parametrize("planted", ["optimizer.pt", "rng_state.pth", "scheduler.pt"])
def test_pickle_planted_in_a_checkpoint_is_refused(tiny_tokenizer, tmp_path, planted):
    examples = [SFTExample(str(i), f"Q: What is {i}?\nA:", f" {i}\n") for i in range(6)]
    cfg = SFTConfig(epochs=2, learning_rate=1e-3, batch_size=3, save_weights=False)

    def stop_in_epoch_2(model, epoch):
        if epoch == 2:
            raise KeyboardInterrupt  # a kill after epoch 1's checkpoint
        return {}

    with pytest.raises(KeyboardInterrupt):
        train_sft(make_tiny_model(tiny_tokenizer), tiny_tokenizer, examples, cfg, tmp_path, stop_in_epoch_2, progress=False)
    (ckpt,) = (tmp_path / "checkpoints").glob("checkpoint-*")
    marker = tmp_path / "ran"
    plant(ckpt / planted, marker)
    with pytest.raises(KnowtuneError, match=r"checkpoint-2: refused to load a checkpoint file that holds more than tensors"):
        train_sft(make_tiny_model(tiny_tokenizer), tiny_tokenizer, examples, cfg, tmp_path, progress=False)
    assert not marker.exists()


def test_remote_code_in_a_model_dir_is_not_run_unless_asked(tiny_workdir, tmp_path):
    model_dir, marker = tmp_path / "model", tmp_path / "ran"
    shutil.copytree(tiny_workdir / "model", model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "custom.CustomConfig", "AutoModelForCausalLM": "custom.CustomModel"}
    (model_dir / "config.json").write_text(json.dumps(config))
    (model_dir / "custom.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    loaded = load_model(str(model_dir))  # the config names a known architecture: its own class is used
    assert type(loaded.model).__name__ == "LlamaForCausalLM" and not marker.exists()
    with pytest.raises(AttributeError, match="CustomConfig"):  # asked for, the directory's code runs (and has no classes)
        load_model(str(model_dir), trust_remote_code=True)
    assert marker.exists()
