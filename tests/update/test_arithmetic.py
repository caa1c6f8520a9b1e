"""Parameter arithmetic for F-Learning: exact on the tiny model, LoRA updates equal peft's own merge,
strict checks name the first offending tensor, safetensors written atomically."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_tiny_model
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from knowtune.errors import KnowtuneError
from knowtune.update.arithmetic import (
    TensorMismatchError,
    add,
    apply,
    apply_to_model,
    load_tensors,
    lora_delta,
    lora_delta_from_dir,
    lora_delta_of_model,
    save_tensors,
    scale,
    subtract,
    task_vector,
)


def _perturbed(model: torch.nn.Module, seed: int = 1) -> dict[str, torch.Tensor]:
    """A stand-in for fine-tuned weights: every tensor moved by a small random step."""
    g = torch.Generator().manual_seed(seed)
    return {n: t + 0.01 * torch.randn(t.shape, generator=g) for n, t in model.state_dict().items()}


@pytest.fixture()
def theta(tiny_tokenizer):
    return make_tiny_model(tiny_tokenizer, seed=0)


def test_lambda_zero_is_the_identity(theta):
    base = theta.state_dict()
    out = apply(base, task_vector(_perturbed(theta), base), 0.0)
    assert out.keys() == base.keys()
    assert all(torch.equal(out[n], base[n]) for n in base)


def test_forgetting_step_is_theta_minus_lambda_delta_elementwise(theta):
    base, ft = theta.state_dict(), _perturbed(theta)
    out = apply(base, task_vector(ft, base), 0.7)
    for n in base:
        assert torch.equal(out[n], base[n] - 0.7 * (ft[n] - base[n])), n
    assert not torch.equal(out["lm_head.weight"], base["lm_head.weight"])


def test_bf16_weights_are_computed_in_float32_and_stay_bf16(theta):
    base = {n: t.to(torch.bfloat16) for n, t in theta.state_dict().items()}
    ft = {n: t.to(torch.bfloat16) for n, t in _perturbed(theta).items()}
    delta = task_vector(ft, base)
    out = apply(base, delta, 0.3)
    for n in base:
        assert delta[n].dtype == out[n].dtype == torch.bfloat16
        want = (base[n].float() - 0.3 * (ft[n].float() - base[n].float()).to(torch.bfloat16).float()).to(torch.bfloat16)
        assert torch.equal(out[n], want), n


def test_subtracting_then_adding_restores_the_model(theta, tiny_tokenizer):
    base = {n: t.clone() for n, t in theta.state_dict().items()}
    delta = task_vector(_perturbed(theta), base)
    ids = tiny_tokenizer("Q: What is the capital of France?\nA:", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = theta(ids).logits
        apply_to_model(theta, delta, 1.5)
        assert torch.equal(theta.state_dict()["model.norm.weight"], apply(base, delta, 1.5)["model.norm.weight"])
        assert not torch.allclose(theta(ids).logits, before, atol=1e-3)
        apply_to_model(theta, delta, -1.5)
        after = theta(ids).logits
    for n, t in theta.state_dict().items():
        torch.testing.assert_close(t, base[n], rtol=0, atol=1e-6)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-4)
    restored = apply(apply(base, delta, 0.4), delta, -0.4)
    assert all(torch.allclose(restored[n], base[n], rtol=0, atol=1e-6) for n in base)


def test_add_subtract_scale_agree(theta):
    a, b = theta.state_dict(), _perturbed(theta)
    for n, t in subtract(add(a, b), b).items():
        torch.testing.assert_close(t, a[n], rtol=0, atol=1e-6)
    d = task_vector(b, a)
    assert all(torch.equal(scale(d, 2.0)[n], add(d, d)[n]) for n in d)


def test_tied_weights_are_updated_once_in_place():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True))
    base = {n: t.clone() for n, t in model.state_dict().items()}
    assert model.state_dict()["lm_head.weight"].data_ptr() == model.state_dict()["model.embed_tokens.weight"].data_ptr()
    delta = task_vector(_perturbed(model), base)
    apply_to_model(model, delta, 1.0)
    want = base["lm_head.weight"] - delta["lm_head.weight"]
    torch.testing.assert_close(model.lm_head.weight.detach(), want, rtol=0, atol=1e-7)


def test_mismatches_name_the_first_offending_tensor(theta):
    base = theta.state_dict()
    names = list(base)
    first, later = names[2], names[6]

    ft = dict(_perturbed(theta))
    del ft[later]
    ft[first] = ft[first][:-1]  # shape, and earlier than the missing one
    with pytest.raises(TensorMismatchError, match=rf"tensor '{first}': shape .* in the fine-tuned weights vs"):
        task_vector(ft, base)

    ft = dict(_perturbed(theta))
    ft[later] = ft[later].to(torch.float16)
    ft[first] = ft[first].to(torch.bfloat16)
    with pytest.raises(TensorMismatchError, match=rf"tensor '{first}': dtype torch.bfloat16 in the first vs torch.float32"):
        add(ft, base)

    ft = {n: t for n, t in _perturbed(theta).items() if n != later}
    with pytest.raises(TensorMismatchError, match=rf"tensor '{later}': in the second but not in the first"):
        subtract(ft, base)
    with pytest.raises(TensorMismatchError, match=r"tensor 'extra.weight': in the delta but not in the base weights"):
        apply(base, {names[0]: base[names[0]], "extra.weight": torch.zeros(2)}, 1.0)
    with pytest.raises(TensorMismatchError, match=r"tensor 'steps' in the delta: not floating point \(torch.int64\)"):
        scale({"steps": torch.tensor([1, 2])}, 2.0)


def _tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=32,
                                      bos_token_id=0, eos_token_id=0)).eval()


LORA_CASES = {
    "patterns": (lambda tok: make_tiny_model(tok), dict(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"],
        rank_pattern={"layers.1.self_attn.q_proj": 2}, alpha_pattern={"v_proj": 3})),
    "rslora": (lambda tok: make_tiny_model(tok), dict(r=4, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "o_proj"])),
    "conv1d-fan-in-fan-out-bias": (lambda tok: _tiny_gpt2(), dict(
        r=2, lora_alpha=5, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True, lora_bias=True)),
}


@pytest.mark.parametrize("case", list(LORA_CASES))
def test_lora_delta_equals_peft_merge(case, tiny_tokenizer, tmp_path):
    build, kwargs = LORA_CASES[case]
    base = build(tiny_tokenizer)
    base_sd = {n: t.clone() for n, t in base.state_dict().items()}
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(**kwargs))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # peft initialises B to zero, which would make every update trivially zero
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    if case == "patterns":
        layer = peft_model.get_base_model().model.layers[1].self_attn
        assert layer.q_proj.lora_A["default"].weight.shape[0] == 2 and layer.v_proj.scaling["default"] == 3 / 4

    delta = lora_delta_of_model(peft_model)
    merged = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    assert merged.keys() == base_sd.keys()
    changed = {n for n in base_sd if not torch.equal(merged[n], base_sd[n])}
    assert set(delta) == changed and changed
    if case.endswith("bias"):
        assert any(n.endswith(".bias") for n in delta)
    for n, d in delta.items():
        assert d.shape == base_sd[n].shape and d.dtype == base_sd[n].dtype
        torch.testing.assert_close(d, merged[n] - base_sd[n], rtol=1e-5, atol=1e-6)
    # forgetting with λ = −1 adds the update: the merged model
    for n, t in apply(base_sd, delta, -1.0).items():
        torch.testing.assert_close(t, merged[n], rtol=1e-5, atol=1e-6)

    from_state = lora_delta(get_peft_model_state_dict(peft_model), peft_model.peft_config["default"])
    peft_model.save_pretrained(tmp_path / "adapter")
    from_dir = lora_delta_from_dir(tmp_path / "adapter")
    for n in delta:
        assert torch.equal(from_state[n], delta[n]) and torch.equal(from_dir[n], delta[n]), n


def test_lora_delta_rejects_what_it_cannot_merge(tiny_tokenizer, tmp_path):
    peft_model = get_peft_model(make_tiny_model(tiny_tokenizer), LoraConfig(r=2, target_modules=["q_proj"]))
    state = get_peft_model_state_dict(peft_model)
    cfg = peft_model.peft_config["default"]
    key_b = next(k for k in state if "lora_B" in k)
    with pytest.raises(TensorMismatchError, match=r"tensor 'model.layers.0.self_attn.q_proj': lora_B.weight is missing"):
        lora_delta({k: v for k, v in state.items() if k != key_b}, cfg)
    with pytest.raises(TensorMismatchError, match=r"tensor 'base_model.model.lm_head.modules_to_save.weight': not a LoRA"):
        lora_delta({**state, "base_model.model.lm_head.modules_to_save.weight": torch.zeros(2, 2)}, cfg)
    with pytest.raises(TensorMismatchError, match=r"q_proj': lora_A \(2, 64\) and lora_B \(64, 2\) do not have rank r=4"):
        lora_delta(state, LoraConfig(r=4, target_modules=["q_proj"]))
    with pytest.raises(KnowtuneError, match="DoRA"):
        lora_delta(state, LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    with pytest.raises(KnowtuneError, match="adapter_config.json: no such file"):
        lora_delta_from_dir(tmp_path)


def test_safetensors_round_trip_is_atomic(theta, tmp_path):
    delta = task_vector(_perturbed(theta), theta.state_dict())
    path = tmp_path / "out" / "delta.safetensors"
    save_tensors(path, delta, {"lambda": "0.5"})
    back = load_tensors(path)
    assert back.keys() == delta.keys() and all(torch.equal(back[n], delta[n]) for n in delta)
    before = path.read_bytes()
    with pytest.raises(Exception):
        save_tensors(path, {"x": "not a tensor"})  # type: ignore[dict-item]
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["delta.safetensors"]  # no temp file left behind
    with pytest.raises(KnowtuneError, match="missing.safetensors: no such file"):
        load_tensors(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(KnowtuneError, match="bad.safetensors: not a readable safetensors file"):
        load_tensors(tmp_path / "bad.safetensors")
