"""vLLM offline engine backend: the production path on GPUs (tensor parallel, prefix caching).

vLLM is imported lazily inside :class:`VLLMBackend` (it ships only in the GPU images:
``pip install 'deepcritic[vllm]'``). The request/response mapping is pure functions that tests
check without vLLM:

* :func:`engine_kwargs` -> ``vllm.LLM(**kwargs)``;
* :func:`to_vllm_sampling_kwargs` -> ``vllm.SamplingParams(**kwargs)``;
* :func:`guided_choice_kwargs` -> the constrained-decoding part of ``SamplingParams``:
  ``structured_outputs=StructuredOutputsParams(choice=...)`` (vLLM >= 0.11) or
  ``guided_decoding=GuidedDecodingParams(choice=...)`` (vLLM <= 0.11; removed later);
* :func:`prefill_groups` splits prompts into those that continue an assistant prefill and those that
  open a new turn (``llm.chat`` takes one ``continue_final_message`` flag per call);
* :func:`completions_from_vllm_output` maps a ``RequestOutput`` to :class:`Completion` objects.

Cancellation (``generate(..., should_stop=f)``, the server): ``LLM.chat`` runs its requests to
the end and has no abort, so with ``should_stop`` the backend drives the engine itself, as
``LLM._run_engine`` does (``llm_engine.add_request`` / ``step`` / ``abort_request``): before every
engine step the requests of cancelled prompts are aborted (vLLM frees their KV blocks and the
others decode on). Prompts are rendered with the tokenizer's chat template as ``LLM.chat`` does.
An aborted request returns no output: its completions are empty, ``finish_reason="cancelled"``.
Without ``should_stop`` (every batch stage) ``LLM.chat`` is used, as before.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import time
from collections.abc import Sequence
from typing import Any

from deepcritic.generation.base import (
    Completion,
    GenerationStats,
    Prompt,
    SamplingParams,
    StopCheck,
    cancelled_completion,
    check_prompts,
    continues_assistant,
    finish_reason_from,
    match_choice,
)
from deepcritic.generation.config import BackendConfig
from deepcritic.models import resolve_model

log = logging.getLogger(__name__)


class ChoiceError(RuntimeError):
    """``choose()`` got outputs that name none of the choices (constrained decoding not applied)."""


VLLM_MISSING = (
    "the vLLM backend needs vLLM, which ships only in the GPU images: "
    "pip install 'deepcritic[vllm]' (or use generation.kind=hf / openai)"
)


def engine_kwargs(config: BackendConfig) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM`` from a :class:`BackendConfig`."""
    kwargs: dict[str, Any] = {
        "model": resolve_model(config.model),
        "tensor_parallel_size": config.tensor_parallel_size,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "enable_prefix_caching": config.enable_prefix_caching,
        "trust_remote_code": config.trust_remote_code,
        # weights load from *.safetensors only: never unpickle a checkpoint's .bin/.pt files
        "load_format": "safetensors",
    }
    if config.max_model_len is not None:
        kwargs["max_model_len"] = config.max_model_len
    if config.dtype != "auto":
        kwargs["dtype"] = config.dtype
    return kwargs


def to_vllm_sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams`` (temperature 0 is greedy in vLLM too)."""
    kwargs: dict[str, Any] = {
        "n": params.n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
    }
    if params.seed is not None:
        kwargs["seed"] = params.seed
    if params.stop:
        kwargs["stop"] = list(params.stop)
    return kwargs


def guided_choice_kwargs(choices: Sequence[str], sampling_module: Any) -> dict[str, Any]:
    """Constrained decoding among ``choices`` for whichever API this vLLM has
    (``sampling_module`` is ``vllm.sampling_params``)."""
    options = list(choices)
    if hasattr(sampling_module, "StructuredOutputsParams"):  # vLLM >= 0.11
        return {"structured_outputs": sampling_module.StructuredOutputsParams(choice=options)}
    if hasattr(sampling_module, "GuidedDecodingParams"):  # vLLM <= 0.11
        return {"guided_decoding": sampling_module.GuidedDecodingParams(choice=options)}
    raise RuntimeError(
        "this vLLM has neither StructuredOutputsParams nor GuidedDecodingParams in "
        "vllm.sampling_params; choose() needs vllm>=0.10,<=0.31"
    )


def prefill_groups(prompts: Sequence[Prompt]) -> list[tuple[bool, list[int]]]:
    """``[(continues_prefill, prompt indices), ...]``: new-turn prompts first, then prefills;
    groups that would be empty are left out."""
    groups = [
        (False, [i for i, p in enumerate(prompts) if not continues_assistant(p)]),
        (True, [i for i, p in enumerate(prompts) if continues_assistant(p)]),
    ]
    return [(cont, idx) for cont, idx in groups if idx]


def completions_from_vllm_output(output: Any) -> list[Completion]:
    """One ``RequestOutput`` -> its completions, in sample order (``CompletionOutput.index``)."""
    prompt_tokens = len(getattr(output, "prompt_token_ids", None) or [])
    samples = sorted(
        enumerate(output.outputs), key=lambda ks: (getattr(ks[1], "index", ks[0]), ks[0])
    )
    return [
        Completion(
            text=sample.text,
            finish_reason=finish_reason_from(sample.finish_reason),
            prompt_tokens=prompt_tokens,
            completion_tokens=len(sample.token_ids or []),
        )
        for _, sample in samples
    ]


class VLLMBackend:
    """:class:`~deepcritic.generation.base.Backend` on a ``vllm.LLM`` offline engine."""

    name = "vllm"

    def __init__(self, config: BackendConfig) -> None:
        try:
            import vllm
            import vllm.sampling_params
        except ImportError as e:
            raise ImportError(VLLM_MISSING) from e
        self.config = config
        self.stats = GenerationStats()
        self._vllm: Any = vllm
        kwargs = engine_kwargs(config)
        log.info("starting vLLM %s engine: %s", getattr(vllm, "__version__", "?"), kwargs)
        self._llm: Any = vllm.LLM(**kwargs)
        self._calls = itertools.count()  # request ids of the engine-driven (abortable) calls

    def _chat(
        self, prompts: list[Prompt], sampling: Any, *, progress: bool
    ) -> list[list[Completion]]:
        """Run ``llm.chat`` once per prefill group and put the outputs back in prompt order."""
        if self._llm is None:
            raise RuntimeError("VLLMBackend is closed")
        results: list[list[Completion]] = [[] for _ in prompts]
        for cont, indices in prefill_groups(prompts):
            outputs = self._llm.chat(
                [prompts[i] for i in indices],
                sampling_params=sampling,
                use_tqdm=progress,
                add_generation_prompt=not cont,
                continue_final_message=cont,
            )
            if len(outputs) != len(indices):
                raise RuntimeError(
                    f"vLLM returned {len(outputs)} outputs for {len(indices)} prompts"
                )
            for i, output in zip(indices, outputs, strict=True):
                results[i] = completions_from_vllm_output(output)
        return results

    def _run_abortable(
        self, prompts: list[Prompt], sampling: Any, n: int, should_stop: StopCheck
    ) -> list[list[Completion]]:
        """Run the prompts on the engine step by step, aborting those ``should_stop`` names."""
        if self._llm is None:
            raise RuntimeError("VLLMBackend is closed")
        engine, tokenizer = self._llm.llm_engine, self._llm.get_tokenizer()
        with contextlib.suppress(AttributeError):  # as LLM.chat: only the final output
            sampling.output_kind = self._vllm.sampling_params.RequestOutputKind.FINAL_ONLY
        call = next(self._calls)
        owner: dict[str, int] = {}
        for i, prompt in enumerate(prompts):
            if should_stop(i):
                continue
            cont = continues_assistant(prompt)
            text = tokenizer.apply_chat_template(
                prompt, tokenize=False, add_generation_prompt=not cont, continue_final_message=cont
            )
            request_id = f"deepcritic-{call}-{i}"
            engine.add_request(request_id, {"prompt": text}, sampling)
            owner[request_id] = i
        results: list[list[Completion]] = [[cancelled_completion()] * n for _ in prompts]
        live = set(owner)
        while live and engine.has_unfinished_requests():
            gone = sorted(r for r in live if should_stop(owner[r]))
            if gone:
                engine.abort_request(gone)  # frees their KV blocks; the others decode on
                log.info("vLLM: aborted %d request(s) of cancelled prompts: %s", len(gone), gone)
                live.difference_update(gone)
            for output in engine.step() if live else ():
                if output.finished and output.request_id in live:
                    results[owner[output.request_id]] = completions_from_vllm_output(output)
                    live.discard(output.request_id)
        lost = sorted(owner[r] for r in live if not should_stop(owner[r]))
        if lost:
            raise RuntimeError(f"the vLLM engine finished without an output for prompts {lost}")
        return results

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        *,
        desc: str | None = None,
        should_stop: StopCheck | None = None,
    ) -> list[list[Completion]]:
        """``params.n`` completions per prompt, in order; vLLM draws its own progress bar.
        With ``should_stop``, a cancelled prompt's requests are aborted (module doc)."""
        items = check_prompts(prompts)
        start = time.perf_counter()
        if desc is not None:
            log.info("%s: %d prompts x %d samples on vLLM", desc, len(items), params.n)
        sampling = self._vllm.SamplingParams(**to_vllm_sampling_kwargs(params))
        if should_stop is None:
            results = self._chat(items, sampling, progress=desc is not None)
        else:
            results = self._run_abortable(items, sampling, params.n, should_stop)
        self.stats.add(results, time.perf_counter() - start)
        return results

    def choose(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> list[int]:
        """Guided decoding among ``choices``; the generated text is exactly one of them.

        An output that names none of the choices means constrained decoding was not applied (an
        engine or API mismatch). That is an error, never a silent default to choice 0 (for a
        verdict, "correct"): the count is recorded in ``stats.extra["choose_unmatched"]`` and the
        call raises :class:`ChoiceError`.
        """
        options = list(choices)
        if not options or len(set(options)) != len(options):
            raise ValueError(f"choose() needs distinct choices, got {options}")
        items = check_prompts(prompts)
        if not items:
            return []
        start = time.perf_counter()
        greedy = SamplingParams(temperature=0.0, max_tokens=max(len(c) for c in options) + 8)
        guided = guided_choice_kwargs(options, self._vllm.sampling_params)
        sampling = self._vllm.SamplingParams(**to_vllm_sampling_kwargs(greedy), **guided)
        texts = [group[0].text for group in self._chat(items, sampling, progress=False)]
        picked = [match_choice(t, options) for t in texts]
        unmatched = [i for i, p in enumerate(picked) if p is None]
        extra = self.stats.extra
        extra["choose_unmatched"] = extra.get("choose_unmatched", 0.0) + len(unmatched)
        extra["choose_prompts"] = extra.get("choose_prompts", 0.0) + len(items)
        extra["choose_seconds"] = extra.get("choose_seconds", 0.0) + time.perf_counter() - start
        if unmatched:
            raise ChoiceError(
                f"choose(): {len(unmatched)} of {len(items)} outputs matched none of {options} "
                f"(first: {texts[unmatched[0]]!r:.80}); constrained decoding was not applied, "
                "check the vLLM version (>=0.10,<=0.31)"
            )
        return [p for p in picked if p is not None]

    def close(self) -> None:
        """Free the engine and its GPU memory (best effort: vLLM keeps some global state)."""
        if self._llm is None:
            return
        self._llm = None
        with contextlib.suppress(Exception):
            from vllm.distributed.parallel_state import (
                destroy_distributed_environment,
                destroy_model_parallel,
            )

            destroy_model_parallel()
            destroy_distributed_environment()
        gc.collect()
        with contextlib.suppress(Exception):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
