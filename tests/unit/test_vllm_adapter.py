"""The vLLM adapter's request/response mapping, checked without vLLM (stand-ins shaped like
vLLM's RequestOutput / CompletionOutput / LLM)."""

from __future__ import annotations

import builtins
import sys
from dataclasses import dataclass, field
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from deepcritic.generation import BackendConfig, SamplingParams, make_backend
from deepcritic.generation.vllm import (
    VLLMBackend,
    completions_from_vllm_output,
    engine_kwargs,
    guided_choice_kwargs,
    prefill_groups,
    to_vllm_sampling_kwargs,
)


@dataclass
class FakeCompletionOutput:  # vllm.outputs.CompletionOutput
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = "stop"


@dataclass
class FakeRequestOutput:  # vllm.outputs.RequestOutput
    prompt_token_ids: list[int]
    outputs: list[FakeCompletionOutput] = field(default_factory=list)


def test_sampling_kwargs() -> None:
    params = SamplingParams(n=4, temperature=0.6, top_p=0.9, max_tokens=77, seed=3, stop=("\n\n",))
    assert to_vllm_sampling_kwargs(params) == {
        "n": 4,
        "temperature": 0.6,
        "top_p": 0.9,
        "max_tokens": 77,
        "seed": 3,
        "stop": ["\n\n"],
    }
    greedy = to_vllm_sampling_kwargs(SamplingParams())
    assert greedy == {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 512}


def test_engine_kwargs_follow_the_config(tmp_path: Any) -> None:
    config = BackendConfig(
        kind="vllm",
        model=str(tmp_path),
        tensor_parallel_size=2,
        gpu_memory_utilization=0.7,
        enable_prefix_caching=False,
        max_model_len=4096,
        dtype="bfloat16",
    )
    assert engine_kwargs(config) == {
        "model": str(tmp_path),
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.7,
        "enable_prefix_caching": False,
        "trust_remote_code": False,
        "load_format": "safetensors",
        "max_model_len": 4096,
        "dtype": "bfloat16",
    }
    defaults = engine_kwargs(BackendConfig(kind="vllm", model=str(tmp_path)))
    assert "max_model_len" not in defaults and "dtype" not in defaults
    assert defaults["enable_prefix_caching"] is True
    assert defaults["load_format"] == "safetensors"  # never pickled .bin/.pt weights


def test_outputs_map_to_completions_in_sample_order() -> None:
    out = FakeRequestOutput(
        prompt_token_ids=[1, 2, 3, 4, 5],
        outputs=[
            FakeCompletionOutput(1, "second", [7, 8, 9], "length"),
            FakeCompletionOutput(0, "first", [6], "stop"),
            FakeCompletionOutput(2, "third", [], "abort"),
        ],
    )
    comps = completions_from_vllm_output(out)
    assert [c.text for c in comps] == ["first", "second", "third"]
    assert [c.finish_reason for c in comps] == ["stop", "length", "error"]
    assert [c.completion_tokens for c in comps] == [1, 3, 0]
    assert all(c.prompt_tokens == 5 for c in comps)


def test_guided_choice_for_both_vllm_apis() -> None:
    new = SimpleNamespace(StructuredOutputsParams=lambda choice: ("so", tuple(choice)))
    old = SimpleNamespace(GuidedDecodingParams=lambda choice: ("gd", tuple(choice)))
    assert guided_choice_kwargs(["1", "-1"], new) == {"structured_outputs": ("so", ("1", "-1"))}
    assert guided_choice_kwargs(("1", "-1"), old) == {"guided_decoding": ("gd", ("1", "-1"))}
    both = SimpleNamespace(**vars(new), **vars(old))  # vLLM 0.11 has both: use the new one
    assert "structured_outputs" in guided_choice_kwargs(["a"], both)
    with pytest.raises(
        RuntimeError, match="neither StructuredOutputsParams nor GuidedDecodingParams"
    ):
        guided_choice_kwargs(["a"], SimpleNamespace())


def test_prefill_groups() -> None:
    user = [{"role": "user", "content": "q"}]
    pre = [*user, {"role": "assistant", "content": "Step 1:"}]
    assert prefill_groups([pre, user, pre, user]) == [(False, [1, 3]), (True, [0, 2])]
    assert prefill_groups([user]) == [(False, [0])]
    assert prefill_groups([]) == []


def test_missing_vllm_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_vllm(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(ImportError, match=r"pip install 'deepcritic\[vllm\]'"):
        make_backend(BackendConfig(kind="vllm", model="whatever"))


class FakeLLM:
    """Records ``chat`` calls; answers each prompt with its last message reversed."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[dict[str, Any]] = []

    def chat(self, messages: list[Any], sampling_params: Any, **kwargs: Any) -> list[Any]:
        self.calls.append({"messages": messages, "sampling": sampling_params, **kwargs})
        so = sampling_params.get("structured_outputs")
        outs = []
        for prompt in messages:
            last = prompt[-1]["content"]
            text = so["choice"][-1] if so else last[::-1]
            samples = [
                FakeCompletionOutput(k, text, [0] * len(text)) for k in range(sampling_params["n"])
            ]
            outs.append(FakeRequestOutput([0] * len(last), samples))
        return outs


@pytest.fixture()
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A stand-in ``vllm`` module: the adapter's calls into vLLM, checked without a GPU."""
    module = ModuleType("vllm")
    sampling = ModuleType("vllm.sampling_params")
    sampling.StructuredOutputsParams = lambda choice: {"choice": choice}  # type: ignore[attr-defined]
    module.sampling_params = sampling  # type: ignore[attr-defined]
    module.SamplingParams = lambda **kw: kw  # type: ignore[attr-defined]
    module.LLM = FakeLLM  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)
    return module


def test_backend_groups_prefills_and_keeps_order(fake_vllm: ModuleType, tmp_path: Any) -> None:
    backend = VLLMBackend(BackendConfig(kind="vllm", model=str(tmp_path)))
    llm = backend._llm
    assert llm.kwargs["model"] == str(tmp_path)
    user = [{"role": "user", "content": "abc"}]
    pre = [*user, {"role": "assistant", "content": "xyz"}]
    outs = backend.generate([pre, user], SamplingParams(n=2, seed=1), desc="gen")
    assert [[c.text for c in g] for g in outs] == [["zyx", "zyx"], ["cba", "cba"]]
    flags = [(c["add_generation_prompt"], c["continue_final_message"]) for c in llm.calls]
    assert flags == [(True, False), (False, True)]
    assert llm.calls[0]["sampling"]["seed"] == 1 and llm.calls[0]["use_tqdm"] is True
    assert backend.stats.prompts == 2 and backend.stats.completion_tokens == 12
    assert backend.choose([pre, user], ["1", "-1"]) == [1, 1]
    assert llm.calls[-1]["sampling"]["structured_outputs"] == {"choice": ["1", "-1"]}
    assert llm.calls[-1]["sampling"]["temperature"] == 0.0
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.generate([user], SamplingParams())


def test_choose_raises_instead_of_defaulting_when_guidance_is_not_applied(
    fake_vllm: ModuleType, tmp_path: Any
) -> None:
    """An engine that ignores the choice constraint answers free text; choose() must not turn that
    into choice 0 ("correct" for a verdict): it counts the outputs and raises."""
    from deepcritic.generation.vllm import ChoiceError

    backend = VLLMBackend(BackendConfig(kind="vllm", model=str(tmp_path)))

    def ignore_guidance(messages: list[Any], sampling_params: Any, **kwargs: Any) -> list[Any]:
        text = "I think the step is fine"
        sample = FakeCompletionOutput(0, text, [0] * len(text))
        return [FakeRequestOutput([0], [sample]) for _ in messages]

    backend._llm.chat = ignore_guidance
    prompt = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "\\boxed{"}]
    with pytest.raises(ChoiceError, match=r"2 of 2 outputs matched none of \['1}', '-1}'\]"):
        backend.choose([prompt, prompt], ["1}", "-1}"])
    assert backend.stats.extra["choose_unmatched"] == 2.0
    assert backend.stats.extra["choose_prompts"] == 2.0


class FakeEngine:  # vllm LLMEngine: add_request / step / abort_request, one token per step
    def __init__(self) -> None:
        self.live: dict[str, tuple[str, dict[str, Any], int]] = {}
        self.added: list[tuple[str, str]] = []
        self.aborted: list[str] = []
        self.steps = 0

    def add_request(self, request_id: str, prompt: dict[str, str], params: Any) -> None:
        self.added.append((request_id, prompt["prompt"]))
        self.live[request_id] = (prompt["prompt"], params, 0)

    def has_unfinished_requests(self) -> bool:
        return bool(self.live)

    def abort_request(self, request_ids: list[str]) -> None:
        self.aborted += request_ids
        for r in request_ids:
            del self.live[r]

    def step(self) -> list[Any]:
        self.steps += 1
        outs = []
        for r, (text, params, made) in list(self.live.items()):
            self.live[r] = (text, params, made + 1)
            if made + 1 == params["max_tokens"]:
                del self.live[r]
                samples = [FakeCompletionOutput(k, "x" * (made + 1), [0] * (made + 1), "length")
                           for k in range(params["n"])]  # fmt: skip
                outs.append(SimpleNamespace(request_id=r, finished=True, prompt_token_ids=[0] * 3,
                                            outputs=samples))  # fmt: skip
        return outs


class FakeChatTokenizer:
    def apply_chat_template(self, messages: list[Any], **kw: Any) -> str:
        assert kw["tokenize"] is False
        tail = "" if kw["continue_final_message"] else "<assistant>"
        return "|".join(m["content"] for m in messages) + tail


def test_should_stop_aborts_the_cancelled_requests_on_the_engine(
    fake_vllm: ModuleType, tmp_path: Any
) -> None:
    backend = VLLMBackend(BackendConfig(kind="vllm", model=str(tmp_path)))
    engine = FakeEngine()
    backend._llm.llm_engine = engine
    backend._llm.get_tokenizer = FakeChatTokenizer
    user = [{"role": "user", "content": "q"}]
    prompts = [user, [*user, {"role": "assistant", "content": "pre"}], user]

    def should_stop(i: int) -> bool:  # prompt 1 goes away after 3 steps; prompt 2 before it starts
        return i == 2 or (i == 1 and engine.steps >= 3)

    outs = backend.generate(prompts, SamplingParams(n=2, max_tokens=40), should_stop=should_stop)
    assert [(r, t) for r, t in engine.added] == [("deepcritic-0-0", "q<assistant>"),
                                                 ("deepcritic-0-1", "q|pre")]  # fmt: skip
    assert engine.aborted == ["deepcritic-0-1"] and engine.steps == 40
    assert [c.finish_reason for c in outs[0]] == ["length", "length"]
    assert outs[0][0].completion_tokens == 40
    for group in outs[1:]:
        assert [(c.finish_reason, c.completion_tokens) for c in group] == [("cancelled", 0)] * 2
    assert llm_calls(backend) == 0  # LLM.chat (no abort) was not used


def llm_calls(backend: VLLMBackend) -> int:
    return len(backend._llm.calls)
