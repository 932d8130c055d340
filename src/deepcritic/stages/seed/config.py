"""Typed configuration of the seed-critique stage (stage 1 of DeepCritic)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from deepcritic.generation import BackendConfig, SamplingParams
from deepcritic.reference import check_prompt_set

SeedMode = Literal["all", "generate", "finalize"]
Teacher = Literal["llm", "calculator"]
TEACHERS = ("llm", "calculator")


@dataclass
class SubstepSampling:
    """Sampling for one teacher sub-step (initial critique, in-depth critique, merge)."""

    n: int = 1  # samples per prompt
    temperature: float = 0.7  # sampling temperature
    top_p: float = 0.9  # nucleus sampling
    max_tokens: int = 1024  # new tokens per sample

    def params(self, seed: int | None) -> SamplingParams:
        return SamplingParams(
            n=self.n,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            seed=seed,
        )


def _initial() -> SubstepSampling:
    # paper: 1 sample, temperature 0.7, top_p 0.9, 1024 tokens
    return SubstepSampling(n=1, temperature=0.7, top_p=0.9, max_tokens=1024)


def _indepth() -> SubstepSampling:
    # paper: 16 samples at temperature 1.0, keep the first whose verdict matches the label;
    # top_p 0.9 and 1024 tokens are ours (the paper gives no value)
    return SubstepSampling(n=16, temperature=1.0, top_p=0.9, max_tokens=1024)


def _merge() -> SubstepSampling:
    # paper: 1 sample, temperature 0.7, 2048 tokens; top_p 0.9 as for the initial critique
    return SubstepSampling(n=1, temperature=0.7, top_p=0.9, max_tokens=2048)


@dataclass
class SeedConfig:
    """Stage 1: deliberate seed critiques from a teacher LLM, filtered and formatted for SFT.

    ``mode``: ``generate`` critiques this shard's solutions; ``finalize`` merges every shard's
    output, balances and writes ``sft.jsonl``; ``all`` does both (finalizing once every shard is
    done, so with N pods the last one to finish writes the SFT data). ``finalize`` reads N from
    ``shard`` (any ``i/N`` with the same N).
    """

    CLI_ALIASES: ClassVar[dict[str, str]] = {
        "backend": "generation.kind",
        "model": "generation.model",
    }

    # llm: the method's teacher (paper: Qwen2.5-72B-Instruct); calculator: a labelled CPU stand-in
    # for solutions that show their arithmetic (deepcritic.stages.seed.calculator), no model at all
    teacher: Teacher = "llm"
    # deepcritic = the project's teacher prompts (prompts/seed_*.md) and SFT format; reference = the
    # authors' Critique_Generation prompts, few-shot merges and SFT format (the eval.py template as
    # the prompt), fetched by URI at the pinned commit (deepcritic.reference); paper preset: reference
    prompt_set: str = "deepcritic"
    data: str = ""  # canonical JSONL of step-labelled solutions (`deepcritic prepare` output)
    out_dir: str = "outputs/seed"  # records, sft.jsonl and the stage report
    generation: BackendConfig = field(default_factory=BackendConfig)
    # the initial critique of each step
    initial: SubstepSampling = field(default_factory=_initial)
    # the in-depth critiques: other angles, and a critique of the initial one
    indepth: SubstepSampling = field(default_factory=_indepth)
    # merging them into one deliberate critique
    merge: SubstepSampling = field(default_factory=_merge)
    # cap on all-correct solutions whose initial critiques were already all right (paper: 250)
    balance_cap: int = 250
    # reference: quality-control rows (PRM800K meta.quality_control, seen by every labeller) skipped
    skip_quality_control: bool = True
    # reference: one solution per problem (a seeded shuffle keeps the first of each problem); here
    # the one with the lowest hash of (seed, id), so every shard layout picks the same one
    one_per_problem: bool = True
    # reference: the first 10,000 problems of that shuffle (-> ~4.5K SFT examples); None = all
    max_problems: int | None = None
    max_solutions: int | None = None  # use only the first N input solutions (None = all)
    # skip (and count) solutions with more steps to critique (up to the first wrong step, or
    # all of them) than this: on a small budget, short solutions give the filter a chance
    max_critiqued_steps: int | None = None
    shard: str = "0/1"  # "i/N": this worker handles shard i of N (by a stable hash of the id)
    mode: SeedMode = "all"  # all | generate (one shard) | finalize (merge the shards)
    chunk_size: int = 16  # solutions batched together; a kill loses at most this one chunk
    require_merge_match: bool = True  # drop a solution whose merged verdict contradicts its label
    # reference: only in-depth samples that wrote their own verdict are used; True lets a forced
    # verdict (finished by constrained decoding) stand in when no self-written one matches
    allow_forced_indepth: bool = False
    # drop (and count) a solution whose merged critique was cut by max_tokens: its verdict was
    # forced and its body is unfinished
    drop_truncated_merges: bool = True
    skip_invalid: bool = False  # count and skip malformed input rows instead of failing
    sample_size: int = 20  # kept critiques logged as an artifact
    seed: int = 0  # sampling and balancing seed
    tracking_uri: str | None = None  # None = $MLFLOW_TRACKING_URI or ./mlflow.db; "off" disables

    def __post_init__(self) -> None:
        if self.teacher not in TEACHERS:
            raise ValueError(f"teacher: expected one of {TEACHERS}, got {self.teacher!r}")
        check_prompt_set(self.prompt_set)
        if self.teacher == "calculator" and self.prompt_set != "deepcritic":
            raise ValueError(
                f"teacher: calculator writes the project's format only; prompt_set: "
                f"{self.prompt_set!r} needs teacher: llm (or prompt_set: deepcritic)"
            )
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.balance_cap < 0:
            raise ValueError(f"balance_cap must be >= 0, got {self.balance_cap}")
        if self.max_problems is not None and self.max_problems < 0:
            raise ValueError(f"max_problems must be >= 0, got {self.max_problems}")
        if self.max_solutions is not None and self.max_solutions < 0:
            raise ValueError(f"max_solutions must be >= 0, got {self.max_solutions}")
        if self.max_critiqued_steps is not None and self.max_critiqued_steps < 1:
            raise ValueError(f"max_critiqued_steps must be >= 1, got {self.max_critiqued_steps}")
        parse_shard(self.shard)


def parse_shard(spec: str) -> tuple[int, int]:
    """``"2/8"`` -> ``(2, 8)``; raises ValueError naming the ``shard`` field otherwise."""
    try:
        index_text, total_text = str(spec).split("/")
        index, total = int(index_text), int(total_text)
    except ValueError:
        raise ValueError(f"shard: expected 'i/N' (e.g. 0/4), got {spec!r}") from None
    if total < 1 or not 0 <= index < total:
        raise ValueError(f"shard: need 0 <= i < N, got {spec!r}")
    return index, total
