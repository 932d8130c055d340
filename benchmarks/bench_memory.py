"""Per-GPU memory plan for SFT and GRPO: model states, activations, vLLM, ZeRO buffers.

    python benchmarks/bench_memory.py                        # paper presets (7B, 8 x 80 GB) and
                                                             # small presets (1.5B, 1 GPU)
    python benchmarks/bench_memory.py --stage sft --preset paper --gpus 16
    python benchmarks/bench_memory.py --model-config /path/config.json --preset small --gpus 2
    python benchmarks/bench_memory.py --markdown             # the tables in docs/training.md

Inputs: the stage preset (``src/deepcritic/configs/{sft,grpo}.<preset>.yaml``: micro-batch, lengths,
DeepSpeed preset, gradient checkpointing, attention, vLLM share) and a model shape (Qwen2.5
shapes built in, or any HF ``config.json``). No weights, no GPU, no network.

The model (bytes per GPU, world size W, N parameters, T tokens in one micro-batch, bf16 = 2 B):
* model states under ZeRO-3 with bf16 and fp32 masters: 2 (bf16 weights) + 2 (bf16 grads) + 4
  (fp32 master) + 8 (Adam m, v) = 16 B x N / W; ZeRO-2: weights whole, the rest / W; no ZeRO: 16 B
  x N. With ``zero3_offload`` only the working set stays on the GPU.
* ZeRO-3 working buffers: 4 B x the largest layer (DeepSpeed's own rule: a gathered bf16 layer and
  its gradient; the embedding for these models) plus the prefetch and reduce buckets.
* optimizer step transient: the fp32 copy of a gradient sub-group (<= 1e9 parameters) at step time.
* activations with gradient checkpointing: each layer's bf16 input kept (L x T x h x 2 B), plus the
  backward of one recomputed layer: 2 x T x (7h + 2 kv + 4 i) x 2 B (q, k, v, attention out, o,
  norms, the SwiGLU MLP's gate/up/act/product); without checkpointing all L layers are kept.
  Attention scores cost nothing extra with flash attention; otherwise heads x s^2 x 2 B per
  sequence (the math kernel of SDPA with a padding mask).
* LM head: TRL's fused head computes log-probs in tiles of 4096 tokens (fp32, a vocab chunk at a
  time): ~ 4096 x vocab chunk x 4 B x 3; ``--full-logits`` models the plain T x V path instead.
* GRPO: + the frozen reference model (bf16, partitioned like the policy) when beta > 0; + vLLM's
  share of the GPU (``vllm_gpu_memory_utilization``, colocate); with sleep mode vLLM releases it
  during the update, so the peak is the larger of the generation and the update phase; GRPO
  micro-batches are padded to the longest completion, so T = per_device x (prompt + completion).
* 2 GB of CUDA context, NCCL and allocator fragmentation on top.

Cross-check: DeepSpeed's ``estimate_zero3_model_states_mem_needs`` (the function behind
``estimate_zero3_model_states_mem_needs_all_cold``: 18 B x N / W + 4 B x largest layer) when
DeepSpeed is installed, printed next to our model states + ZeRO buffers.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "src" / "deepcritic" / "configs"
GB = 1e9
CONTEXT_BYTES = 2 * GB  # CUDA context, NCCL buffers, allocator fragmentation
LOGPROB_TILE = 4096  # tokens per tile of TRL's fused LM head
VOCAB_CHUNK = 16384  # vocabulary columns per tile (an upper bound)
SUB_GROUP = 1e9  # DeepSpeed ZeRO-3 sub_group_size (default)


@dataclass(frozen=True)
class Shape:
    """A decoder-only transformer (Llama / Qwen2 family)."""

    name: str
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    head_dim: int | None = None

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.head_dim or self.hidden // self.heads)

    @property
    def layer_params(self) -> int:
        h, kv = self.hidden, self.kv_dim
        attention = h * h + h + 2 * (h * kv + kv) + h * h  # q (+bias), k, v (+bias), o
        return attention + 3 * h * self.intermediate + 2 * h

    @property
    def params(self) -> int:
        embed = self.vocab * self.hidden * (1 if self.tied else 2)
        return embed + self.layers * self.layer_params + self.hidden

    @property
    def largest_layer(self) -> int:
        return max(self.vocab * self.hidden, self.layer_params)


SHAPES = {  # the models' config.json values
    "qwen2.5-7b": Shape("Qwen2.5-7B-Instruct", 3584, 28, 18944, 28, 4, 152064, tied=False),
    "qwen2.5-1.5b": Shape("Qwen2.5-1.5B-Instruct", 1536, 28, 8960, 12, 2, 151936, tied=True),
}
PRESET_MODELS = {"paper": "qwen2.5-7b", "small": "qwen2.5-1.5b"}


def shape_from_config(path: str) -> Shape:
    cfg = json.loads(Path(path).read_text())
    cfg = cfg.get("text_config", cfg)
    return Shape(
        name=str(cfg.get("_name_or_path") or Path(path).parent.name), hidden=cfg["hidden_size"],
        layers=cfg["num_hidden_layers"], intermediate=cfg["intermediate_size"],
        heads=cfg["num_attention_heads"],
        kv_heads=cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
        vocab=cfg["vocab_size"], tied=bool(cfg.get("tie_word_embeddings", False)),
        head_dim=cfg.get("head_dim"),
    )  # fmt: skip


@dataclass(frozen=True)
class Run:
    """What a stage preset says about memory (both stages map onto this)."""

    stage: str
    world: int
    micro_batch: int  # sequences per micro-step per GPU
    seq_len: int  # tokens per sequence (prompt + completion for GRPO)
    zero: int  # 0, 2, 3
    offload: bool
    checkpointing: bool
    flash: bool
    reference: bool = False  # GRPO with beta > 0
    vllm_share: float = 0.0  # colocated vLLM's share of the GPU
    vllm_sleep: bool = False


def load_preset(stage: str, preset: str) -> Any:
    """The stage's typed config from ``configs/<stage>.<preset>.yaml``."""
    from deepcritic.config import load_config
    from deepcritic.stages.grpo import CriticGRPOConfig
    from deepcritic.stages.sft import CriticSFTConfig

    path = CONFIGS / f"{stage}.{preset}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no preset {path}")
    return load_config(CriticSFTConfig if stage == "sft" else CriticGRPOConfig, path)


def run_from_config(config: Any, world: int, gpu: bool = True) -> Run:
    """The memory-relevant settings of an SFT or GRPO config for ``world`` GPUs."""
    from deepcritic.stages.sft_config import CriticSFTConfig, batch_plan

    ds = str(config.deepspeed or "")
    zero = 3 if ds.startswith("zero3") else 2 if ds == "zero2" else 0
    flash = gpu and "flash" in str(config.attn_implementation or "")
    common = {"world": world, "zero": zero, "offload": ds.endswith("offload"),
              "checkpointing": config.gradient_checkpointing, "flash": flash}  # fmt: skip
    if isinstance(config, CriticSFTConfig):
        micro = batch_plan(config, world).per_device
        return Run("sft", micro_batch=micro, seq_len=config.max_length, **common)
    vllm = config.use_vllm and config.vllm_mode == "colocate"
    return Run(
        "grpo", micro_batch=config.per_device_train_batch_size,
        seq_len=(config.max_prompt_tokens or 1024) + config.max_completion_length,
        reference=config.beta > 0, vllm_share=config.vllm_gpu_memory_utilization if vllm else 0.0,
        vllm_sleep=vllm and config.vllm_enable_sleep_mode, **common,
    )  # fmt: skip


# ---------------------------------------------------------------- the plan


def model_states(shape: Shape, run: Run) -> dict[str, float]:
    """Bytes per GPU of weights, gradients, fp32 masters and Adam states."""
    n, w = shape.params, run.world
    if run.zero == 3 and run.offload:  # all on the host; the working set is in the ZeRO buffers
        return {"weights (bf16)": 0.0, "grads (bf16)": 0.0, "fp32 master + Adam": 0.0}
    part = {3: (w, w, w), 2: (1, w, w)}.get(run.zero, (1, 1, 1))
    return {
        "weights (bf16)": 2 * n / part[0],
        "grads (bf16)": 2 * n / part[1],
        "fp32 master + Adam": 12 * n / part[2],
    }


def zero_buffers(shape: Shape, run: Run) -> float:
    """ZeRO-3 gathered layer + prefetch / reduce buckets ("auto": 0.9 h^2 and h^2 elements)."""
    if run.zero != 3:
        return 0.0
    h = shape.hidden
    return 4 * shape.largest_layer + 2 * (0.9 * h * h) + 2 * (h * h)


def activations(shape: Shape, run: Run) -> float:
    """Bytes of activations for one micro-batch (forward kept + one layer's backward)."""
    tokens = run.micro_batch * run.seq_len
    per_layer = tokens * (7 * shape.hidden + 2 * shape.kv_dim + 4 * shape.intermediate) * 2
    if run.checkpointing:
        kept = shape.layers * tokens * shape.hidden * 2 + 2 * per_layer
    else:
        kept = shape.layers * per_layer + per_layer
    scores = 0.0 if run.flash else run.micro_batch * shape.heads * run.seq_len**2 * 2
    return kept + (scores if run.checkpointing else shape.layers * scores)


def lm_head(shape: Shape, run: Run, full_logits: bool = False) -> float:
    tokens = run.micro_batch * run.seq_len
    if full_logits:  # bf16 logits + fp32 upcast + fp32 log-softmax grad
        return tokens * shape.vocab * (2 + 4 + 4)
    return 3 * min(tokens, LOGPROB_TILE) * min(shape.vocab, VOCAB_CHUNK) * 4 + tokens * 4 * 4


def plan(shape: Shape, run: Run, gpu_bytes: float, full_logits: bool = False) -> dict[str, float]:
    """Per-GPU bytes by component, the peak, and the headroom on a ``gpu_bytes`` GPU."""
    rows = dict(model_states(shape, run))
    if run.reference:  # partitioned like the policy's weights (offloaded with them)
        ref = 0.0 if run.offload else 2 * shape.params / (run.world if run.zero == 3 else 1)
        rows["reference model (bf16)"] = ref
    rows["ZeRO-3 buffers"] = zero_buffers(shape, run)
    act = activations(shape, run) + lm_head(shape, run, full_logits)
    step = 4 * min(SUB_GROUP, shape.params / run.world) if run.zero and not run.offload else 0.0
    rows["activations (micro-batch)"] = act
    rows["optimizer step transient"] = step
    vllm = run.vllm_share * gpu_bytes
    rows["vLLM (colocated)"] = vllm
    rows["CUDA context, NCCL"] = CONTEXT_BYTES
    fixed = sum(v for k, v in rows.items() if k not in (
        "activations (micro-batch)", "optimizer step transient", "vLLM (colocated)"))  # fmt: skip
    update = fixed + max(act, step) + (0.0 if run.vllm_sleep else vllm)
    generation = fixed + vllm + (2 * shape.largest_layer if run.vllm_share else 0.0)
    rows["peak"] = max(update, generation)
    rows["headroom"] = gpu_bytes - rows["peak"]
    return rows


def deepspeed_estimate(shape: Shape, run: Run, gpus_per_node: int) -> float | None:
    """DeepSpeed's own ZeRO-3 model-states estimate (GPU bytes per GPU), if it is installed."""
    if run.zero != 3:
        return None
    try:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    except ImportError:
        return None
    nodes = max(1, run.world // gpus_per_node)
    _, gpu_mem, _ = estimate_zero3_model_states_mem_needs(
        shape.params, shape.largest_layer, num_gpus_per_node=min(gpus_per_node, run.world),
        num_nodes=nodes, cpu_offload=run.offload, cpu_offload_params=run.offload,
    )  # fmt: skip
    return float(gpu_mem)


# ---------------------------------------------------------------- report


@dataclass(frozen=True)
class Case:
    stage: str
    preset: str
    shape: Shape
    gpus: int
    gpus_per_node: int
    gpu_gb: float
    deepspeed: str | None = None  # overrides the preset's


def evaluate(case: Case, full_logits: bool = False) -> tuple[Run, dict[str, float], float | None]:
    config = load_preset(case.stage, case.preset)
    if case.deepspeed is not None:
        config = replace(config, deepspeed=case.deepspeed or None)
    run = run_from_config(config, case.gpus)
    rows = plan(case.shape, run, case.gpu_gb * GB, full_logits)
    return run, rows, deepspeed_estimate(case.shape, run, case.gpus_per_node)


def describe(case: Case, run: Run) -> str:
    zero = f"ZeRO-{run.zero}{' offload' if run.offload else ''}" if run.zero else "no ZeRO"
    extra = (
        f", vLLM {run.vllm_share:.0%}{' (sleeps)' if run.vllm_sleep else ''}"
        if run.vllm_share
        else ""
    )
    return (f"{case.stage} {case.preset}: {case.shape.name} ({case.shape.params / 1e9:.2f}B), "
            f"{case.gpus} x {case.gpu_gb:.0f} GB, {zero}, micro-batch {run.micro_batch} x "
            f"{run.seq_len} tokens, checkpointing {'on' if run.checkpointing else 'off'}, "
            f"{'flash' if run.flash else 'SDPA'} attention{extra}")  # fmt: skip


def print_case(case: Case, full_logits: bool = False) -> None:
    run, rows, ds = evaluate(case, full_logits)
    print(describe(case, run))
    for name, value in rows.items():
        print(f"  {name:28s} {value / GB:8.1f} GB")
    if ds is not None:
        ours = sum(v for k, v in rows.items() if k in model_states(case.shape, run)) + rows[
            "ZeRO-3 buffers"]  # fmt: skip
        print(f"  DeepSpeed estimate (model states + largest layer): {ds / GB:.1f} GB; "
              f"ours: {ours / GB:.1f} GB")  # fmt: skip
    print(f"  -> {'fits' if rows['headroom'] >= 0 else 'DOES NOT FIT'}\n")


def markdown(cases: list[Case]) -> str:
    """One table: a column per case, a row per component (the tables in docs/training.md)."""
    results = [evaluate(c) for c in cases]
    heads = [f"{c.stage} {c.preset}, {c.gpus} x {c.gpu_gb:.0f} GB" for c in cases]
    lines = ["| per GPU (GB) | " + " | ".join(heads) + " |",
             "| --- |" + " ---: |" * len(cases)]  # fmt: skip
    fullest = sorted(results, key=lambda r: -len(r[1]))
    names = list(dict.fromkeys(k for _, rows, _ in fullest for k in rows))
    for name in names:
        cells = [f"{rows[name] / GB:.1f}" if name in rows else "-" for _, rows, _ in results]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ds_cells = [f"{ds / GB:.1f}" if ds is not None else "-" for _, _, ds in results]
    lines.append(
        "| DeepSpeed's ZeRO-3 estimate (states + largest layer) | " + " | ".join(ds_cells) + " |"
    )
    return "\n".join(lines)


def default_cases(gpu_gb: float) -> list[Case]:
    big, small = SHAPES["qwen2.5-7b"], SHAPES["qwen2.5-1.5b"]
    return [
        Case("sft", "paper", big, 8, 8, gpu_gb), Case("grpo", "paper", big, 8, 8, gpu_gb),
        Case("sft", "small", small, 1, 1, gpu_gb), Case("grpo", "small", small, 1, 1, gpu_gb),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage", choices=("sft", "grpo"), help="default: both")
    parser.add_argument("--preset", help="paper | small | local | tiny (default: paper and small)")
    parser.add_argument("--model", choices=sorted(SHAPES), help="a built-in shape")
    parser.add_argument("--model-config", help="an HF config.json (any decoder-only model)")
    parser.add_argument("--gpus", type=int, help="world size (default: 8 paper, 1 small)")
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--gpu-gb", type=float, default=80.0)
    parser.add_argument(
        "--deepspeed", help="override the preset: zero3 | zero3_offload | zero2 | ''"
    )
    parser.add_argument("--full-logits", action="store_true", help="no fused LM head")
    parser.add_argument("--markdown", action="store_true", help="the docs/training.md tables")
    args = parser.parse_args(argv)
    cases = default_cases(args.gpu_gb)
    custom = (args.stage, args.preset, args.model, args.model_config, args.gpus, args.deepspeed)
    if any(v is not None for v in custom):
        cases = [_custom(c, args) for c in cases if _selected(c, args)]
        cases = list({(c.stage, c.preset): c for c in cases}.values())
    if args.markdown:
        print(markdown(cases))
        return 0
    for case in cases:
        print_case(case, args.full_logits)
    return 0


def _selected(case: Case, args: argparse.Namespace) -> bool:
    return args.stage in (None, case.stage) and (args.preset is None or case.preset == "paper")


def _custom(case: Case, args: argparse.Namespace) -> Case:
    preset = args.preset or case.preset
    shape = SHAPES[args.model or PRESET_MODELS.get(preset, "qwen2.5-7b")]
    if args.model_config:
        shape = shape_from_config(args.model_config)
    gpus = args.gpus or (8 if preset == "paper" else 1)
    return replace(case, preset=preset, shape=shape, gpus=gpus, deepspeed=args.deepspeed,
                   gpus_per_node=min(args.gpus_per_node, gpus))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
