"""Critique-server benchmark: latency p50/p95 and throughput at 1/8/32 concurrent clients with
dynamic batching on and off (same model, same requests, one run), and the p50 overhead of the
server over a direct ``backend.generate`` call.

    DEEPCRITIC_CACHE=/tmp/dccache python benchmarks/bench_server.py --model tiny --max-tokens 32

Targets (issue 6): >= 4x throughput at 32 clients with batching; p50 overhead <= 5%.
The server runs in a subprocess on 127.0.0.1 (exactly ``deepcritic serve``); clients are closed
loops (each sends its next request when the previous answer arrives).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
PROCESSBENCH = ROOT.parent / "shared" / "data" / "processbench" / "gsm8k.json"
MODEL_NAME = "deepcritic"


@dataclass
class LevelResult:
    batching: str
    clients: int
    requests: int
    errors: int
    p50_s: float
    p95_s: float
    throughput_rps: float


def load_requests(n: int, max_tokens: int) -> list[dict[str, Any]]:
    """``n`` critique requests from ProcessBench GSM8K (synthetic if the file is absent)."""
    rows: list[dict[str, Any]] = []
    if PROCESSBENCH.is_file():
        rows = json.loads(PROCESSBENCH.read_text())[:n]
    while len(rows) < n:
        i = len(rows)
        rows.append({"problem": f"What is {i} + {i}?", "steps": [f"{i} + {i} = {2 * i}.", "Done."]})
    return [
        {"problem": r["problem"], "steps": r["steps"][:12], "max_tokens": max_tokens} for r in rows
    ]


def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def paired_overhead(
    model: str, base: str, requests: list[dict[str, Any]], repeats: int
) -> tuple[float, float, float]:
    """Alternate a direct ``backend.generate`` call and the same request through the server (at
    one client), so machine-load drift hits both alike. Returns (direct p50, server p50,
    median of the paired relative differences)."""
    from deepcritic.generation import BackendConfig, SamplingParams, make_backend
    from deepcritic.models import resolve_model
    from deepcritic.prompting import critique_messages

    backend = make_backend(BackendConfig(kind="hf", model=resolve_model(model), device="cpu"))
    params = SamplingParams(max_tokens=requests[0]["max_tokens"])
    direct, served = [], []
    with httpx.Client(base_url=base, timeout=600) as http:
        for i in range(repeats + 1):
            r = requests[i % len(requests)]
            start = time.perf_counter()
            backend.generate([critique_messages(r["problem"], r["steps"])], params)
            mid = time.perf_counter()
            http.post(f"/v1/models/{MODEL_NAME}:predict", json=r).raise_for_status()
            end = time.perf_counter()
            if i:  # the first pair warms up
                direct.append(mid - start)
                served.append(end - mid)
    backend.close()
    rel = statistics.median(s / d - 1 for s, d in zip(served, direct, strict=True))
    return statistics.median(direct), statistics.median(served), rel


def start_server(
    model: str, port: int, batching: bool, args: argparse.Namespace
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "deepcritic.cli", "serve", "--model-uri", model, "--port", str(port),
           "--backend", args.backend, "--generation.device", args.device, "--generation.batch-size", str(args.max_batch_size),
           "--batching.enabled", str(batching).lower(), "--batching.max-batch-size", str(args.max_batch_size),
           "--batching.max-wait-ms", str(args.max_wait_ms), "--max-tokens", str(args.max_tokens),
           "--limits.max-prompt-tokens", "8192"]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": "off"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if (
                httpx.get(f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}", timeout=2).status_code
                == 200
            ):
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server not ready after 300 s")


async def run_level(
    base: str, requests: list[dict[str, Any]], clients: int
) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    todo = iter(requests)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as http:

        async def client() -> None:
            nonlocal errors
            for body in todo:
                start = time.perf_counter()
                r = await http.post(f"/v1/models/{MODEL_NAME}:predict", json=body)
                latencies.append(time.perf_counter() - start)
                errors += r.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - start
    return latencies, errors, wall


def bench_mode(
    model: str,
    batching: bool,
    requests: list[dict[str, Any]],
    args: argparse.Namespace,
    overhead: list[float],
) -> list[LevelResult]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = start_server(model, port, batching, args)
    base = f"http://127.0.0.1:{port}"
    out = []
    try:
        asyncio.run(run_level(base, requests[:2], 1))  # warm-up
        if batching and args.direct_repeats:
            overhead[:] = paired_overhead(model, base, requests, args.direct_repeats)
            print(f"  direct p50={overhead[0]:.3f}s server p50={overhead[1]:.3f}s "
                  f"paired overhead={overhead[2]:+.1%}", flush=True)  # fmt: skip
        for clients in args.levels:
            n = max(args.min_requests, args.rounds * clients)
            batch = [requests[i % len(requests)] for i in range(n)]
            lat, errors, wall = asyncio.run(run_level(base, batch, clients))
            res = LevelResult("on" if batching else "off", clients, n, errors, statistics.median(lat),
                              quantile(lat, 0.95), n / wall)  # fmt: skip
            print(f"  batching={res.batching:3} clients={clients:3} n={n:4} p50={res.p50_s:.3f}s "
                  f"p95={res.p95_s:.3f}s throughput={res.throughput_rps:.2f} req/s errors={errors}", flush=True)  # fmt: skip
            out.append(res)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="tiny", help="tiny | default | checkpoint folder")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    p.add_argument("--rounds", type=int, default=3, help="requests per client at each level")
    p.add_argument("--min-requests", type=int, default=16)
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=2.0)
    p.add_argument("--direct-repeats", type=int, default=10, help="paired direct/server calls")
    p.add_argument("--out", help="write the figures as JSON here")
    p.add_argument("--backend", default="hf", help="hf | vllm (the server's generation backend)")
    p.add_argument("--device", default="cpu", help="hf backend's device: cpu | cuda")
    p.add_argument("--modes", default="on,off", help="batching modes to measure: on,off | on")
    args = p.parse_args(argv)

    requests = load_requests(64, args.max_tokens)
    print(f"model={args.model} max_tokens={args.max_tokens} levels={args.levels}", flush=True)
    overhead: list[float] = [float("nan")] * 3
    results = bench_mode(args.model, True, requests, args, overhead)
    if "off" in args.modes.split(","):
        results += bench_mode(args.model, False, requests, args, [])
    by = {(r.batching, r.clients): r for r in results}
    top = max(args.levels)
    off = by.get(("off", top))
    speedup = by[("on", top)].throughput_rps / off.throughput_rps if off else float("nan")
    print(f"throughput at {top} clients, batching on/off: {speedup:.2f}x (target >= 4x)")
    print(f"p50 overhead of the server (batching on, 1 client) over a direct backend call: "
          f"{overhead[2]:+.1%} paired; direct p50 {overhead[0]:.3f}s, server p50 {overhead[1]:.3f}s "
          f"(target <= 5%)")  # fmt: skip
    if args.out:
        summary = {"model": args.model, "max_tokens": args.max_tokens, "direct_p50_s": overhead[0],
                   "server_p50_s": overhead[1], "overhead_p50_paired": overhead[2],
                   "speedup_at_max_clients": speedup, "levels": [asdict(r) for r in results]}  # fmt: skip
        Path(args.out).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
