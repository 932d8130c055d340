"""GRPO's typed config and result (YAML preset + CLI overrides): the trainer is in
:mod:`deepcritic.stages.grpo`, the RL data (loading, curation, prompts) in
:mod:`deepcritic.stages.rl_data`.

The paper's RL hyperparameters are not public: every default below is ours unless it says
``# paper:``; ``num_generations = 8`` follows the issue's spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DataSource = Literal["labels", "mc"]
LossType = Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo"]
Precision = Literal["auto", "bf16", "fp32"]


@dataclass
class CriticGRPOConfig:
    """GRPO of the critic. The paper's RL hyperparameters are not public: values are ours."""

    model: str = "default"  # the SFT checkpoint (a folder, or any resolve_model name)
    data_source: DataSource = "labels"  # labels = PRM800K/CHAMP labels; mc = `deepcritic mc` output
    labels_path: str = ""  # canonical JSONL with human first-error labels
    mc_path: str = ""  # canonical JSONL written by `deepcritic mc` (meta.mc_estimates)
    # The authors' released RL set (any load_solutions spec or URI, e.g. jsonl:hf://datasets/...):
    # when set it is read as given (counted, not curated) instead of labels_path / mc_path
    rl_data_uri: str = ""
    # RL data curation (docs/training.md, "RL data"; the paper preset curates, ours keeps all):
    # drop PRM800K quality-control rows (meta.quality_control), as the seed stage does
    drop_quality_control: bool = False
    # the same problem and steps labelled more than once (PRM800K serves some solutions to several
    # labellers): one copy kept when the labels agree, every copy dropped when they conflict
    drop_duplicate_solutions: bool = False
    # at most N solutions (labelled trajectories) of each problem, chosen by a seeded stable rank
    # (None = all; the reference's count is not released: its MC scripts keep every wrong one)
    max_solutions_per_problem: int | None = None
    # leave out every solution of the seed stage's problems (matched on normalized problem text):
    # the seed out_dir (sft.jsonl + shard records: every critiqued problem), or one JSONL file
    # (sft.jsonl, shard records, canonical solutions); "" = exclude nothing
    exclude_problems_from: str = ""
    balance_labels: bool = False  # keep as many correct as erroneous solutions (seeded choice)
    # The critic's prompt: deepcritic = the project's (prompts/critique_*.md); reference = the
    # authors' (their template, Qwen's default system message, eval.py's step numbering)
    prompt_set: str = "deepcritic"
    limit: int | None = None  # first N solutions
    max_prompt_tokens: int | None = None  # drop (and count) longer critique prompts
    out_dir: str = "out/grpo"  # checkpoints; the final model in <out_dir>/final
    num_generations: int = 8  # issue spec (group size)
    max_completion_length: int = 4096  # ours: deliberate critiques are long
    temperature: float = 1.0  # ours
    top_p: float = 1.0  # nucleus sampling of the rollouts
    beta: float = 0.001  # KL coefficient (ours; DeepSeek-R1's value)
    learning_rate: float = 1e-6  # ours
    lr_scheduler_type: str = "constant"  # transformers scheduler name
    warmup: float = 0.0  # < 1: fraction of the steps; >= 1: a number of steps
    loss_type: LossType = "dapo"  # TRL default: token-level normalisation, no length bias
    scale_rewards: Literal["group", "batch", "none"] = "group"  # advantage scaling (TRL)
    epsilon: float = 0.2  # PPO clip
    num_iterations: int = 1  # policy updates per generation batch (mu)
    per_device_train_batch_size: int = 8  # completions per device per micro-step
    gradient_accumulation_steps: int = 1  # used when effective_batch_size is None
    # completions per optimizer step, the same for every world size (accumulation derived from it)
    effective_batch_size: int | None = None
    mask_truncated_completions: bool = False  # no loss on completions cut at max_completion_length
    num_train_epochs: float = 1.0  # passes over the prompts (max_steps wins)
    max_steps: int = -1  # > 0 overrides epochs
    format_penalty: float = 0.0  # added for an unparsable critique (0 = off); e.g. -0.5
    # how the reward reads a critique: strict (the method's: the judgment after **Answer**:), lenient,
    # or official (eval.py's last box anywhere; the authors' RL reward code is not released)
    reward_parser: str = "strict"
    precision: Precision = "auto"  # auto = bf16 on GPU and on CPUs with AMX, else fp32
    gradient_checkpointing: bool = False  # recompute activations (less memory)
    attn_implementation: str | None = None  # flash_attention_2 where the image has flash_attn
    use_vllm: bool = False  # generate with vLLM
    vllm_mode: Literal["colocate", "server"] = "colocate"  # TRL: vLLM in the trainer
    vllm_gpu_memory_utilization: float = 0.3  # colocate: share of each GPU vLLM may take
    vllm_tensor_parallel_size: int = 1  # GPUs per vLLM engine (colocate)
    vllm_enable_sleep_mode: bool = False  # colocate: free vLLM's memory during the update
    deepspeed: str | None = None  # zero2 | zero3 | zero3_offload | path to a DeepSpeed JSON
    save_steps: int = 50  # checkpoint every N steps (resume)
    save_total_limit: int = 2  # checkpoints kept
    logging_steps: int = 1  # log reward and loss every N steps
    resume: bool = True  # continue from the newest checkpoint in out_dir/checkpoints
    seed: int = 0  # sampling and data order seed
    trust_remote_code: bool = False  # run model code from the checkpoint (off: safety)
    compact_cpu_logprobs: bool = True  # score only completion tokens on CPU (see _compact_logprobs)
    tracking_uri: str | None = None  # None = $MLFLOW_TRACKING_URI or ./mlflow.db; "off" disables

    CLI_ALIASES = {"data": "labels_path"}

    def __post_init__(self) -> None:
        from deepcritic.reference import check_prompt_set

        check_prompt_set(self.prompt_set)
        if self.data_source not in ("labels", "mc"):
            raise ValueError(f"data_source: must be labels or mc, got {self.data_source!r}")
        from deepcritic.rewards import REWARD_PARSERS

        if self.reward_parser not in REWARD_PARSERS:
            raise ValueError(
                f"reward_parser: must be one of {', '.join(REWARD_PARSERS)}, got {self.reward_parser!r}"
            )
        n = self.max_solutions_per_problem
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"max_solutions_per_problem: must be >= 1 or null (all), got {n!r}")


@dataclass
class CriticGRPOResult:
    checkpoint: str  # out_dir/final: safetensors + tokenizer
    steps: int
    prompts: int
    resumed_from: str | None = None
    seconds: float = 0.0
    seconds_per_step: float = 0.0
    reward_curve: list[float] = field(default_factory=list)  # mean reward per logged step
    data_counts: dict[str, int] = field(default_factory=dict)
