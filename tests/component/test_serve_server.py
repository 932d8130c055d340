"""The real critique server (kserve.ModelServer, tiny model) in a subprocess on 127.0.0.1.

Good and bad requests, both protocols (also through KServe's own Python client, binary tensors
included), readiness/liveness/metrics, the README's curl command run as written, clients that
disconnect (their queued prompts never reach the model), no repository unload route, and a
bounded load test (32 concurrent clients, 64 requests): 0 errors, the process survives, requests
were batched.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PRESET = ROOT / "src/deepcritic/configs/serve.tiny.yaml"
# long generations are allowed so that a request can keep the model busy (the random tiny model
# never stops early: max_tokens is exactly what it generates)
LIMITS = ["--limits.max-new-tokens", "1024", "--limits.max-request-tokens", "2048"]
CLIENTS, REQUESTS = 32, 64  # the bounded load test
MODEL = "deepcritic"
PROBLEM = "Tom has 3 apples and buys 2 more. How many apples does he have?"
STEPS = ["Tom starts with 3 apples.", "He buys 2 more, so 3 + 2 = 6.", "The answer is 6."]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[bytes], base: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/v1/models/{MODEL}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    pytest.fail(f"server not ready after {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: str) -> Iterator[dict]:
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    cmd = [sys.executable, "-m", "deepcritic.cli", "serve", "--config", str(PRESET),
           "--port", str(port), "--model-uri", tiny_model_path, *LIMITS]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": "off", "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base, log)
        yield {"base": base, "port": port, "proc": proc, "log": log}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("server did not stop within 30 s of SIGTERM")


def _predict(base: str, body: object, **kw: object) -> httpx.Response:
    return httpx.post(f"{base}/v1/models/{MODEL}:predict", json=body, timeout=60, **kw)  # type: ignore[arg-type]


def test_listens_on_loopback_only(server: dict) -> None:
    port_hex = f"{server['port']:04X}"
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and local.endswith(":" + port_hex):
                listening.append(local.split(":")[0])
    assert listening == ["0100007F"], listening  # 127.0.0.1 only, not 0.0.0.0 / ::


def test_liveness_readiness_metrics(server: dict) -> None:
    base = server["base"]
    assert httpx.get(f"{base}/").json()["status"] == "alive"
    assert httpx.get(f"{base}/v1/models/{MODEL}").json() == {"name": MODEL, "ready": True}
    assert httpx.get(f"{base}/v1/models/nope").status_code == 404
    _predict(base, {"problem": PROBLEM, "steps": STEPS, "max_tokens": 4}).raise_for_status()
    metrics = httpx.get(f"{base}/metrics").text
    for name in ("request_predict_seconds_count", "deepcritic_requests_total",
                 "deepcritic_batch_size_bucket", "deepcritic_completion_tokens_total",
                 "deepcritic_request_seconds_bucket", "deepcritic_prompt_tokens_total"):  # fmt: skip
        assert name in metrics, name


def test_critique_response(server: dict) -> None:
    r = _predict(server["base"], {"problem": PROBLEM, "steps": STEPS, "max_tokens": 8, "id": "q1"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "q1"
    assert out["first_error_step"] is None or -1 <= out["first_error_step"] < len(STEPS)
    assert isinstance(out["critique"], str) and isinstance(out["verdicts"], list)
    assert out["model"]["name"] == MODEL and out["model"]["version"].startswith("local:")
    assert out["usage"]["completion_tokens"] == 8  # the random model never stops early
    assert out["usage"]["prompt_tokens"] > 100
    assert "votes" not in out


def test_votes_and_instances(server: dict) -> None:
    one = {"problem": PROBLEM, "steps": STEPS, "max_tokens": 4, "samples": 3}
    r = _predict(server["base"], {"instances": [one, {"problem": "1+1?", "steps": ["2"]}]})
    assert r.status_code == 200, r.text
    first, second = r.json()["predictions"]
    assert len(first["votes"]["labels"]) == 3
    assert first["votes"]["unparsed"] + sum(first["votes"]["counts"].values()) == 3
    assert first["usage"]["completion_tokens"] == 12
    assert "votes" not in second


def test_v2_open_inference_protocol(server: dict) -> None:
    body = {
        "id": "r2",
        "inputs": [
            {"name": "problem", "shape": [2], "datatype": "BYTES", "data": [PROBLEM, "1+1?"]},
            {
                "name": "steps",
                "shape": [2],
                "datatype": "BYTES",
                "data": [json.dumps(STEPS), json.dumps(["2"])],
            },  # fmt: skip
        ],
        "parameters": {"max_tokens": 4},
    }
    r = httpx.post(f"{server['base']}/v2/models/{MODEL}/infer", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "r2"
    by_name = {o["name"]: o for o in out["outputs"]}
    results = [json.loads(x) for x in by_name["result"]["data"]]
    assert [x["usage"]["completion_tokens"] for x in results] == [4, 4]
    assert by_name["critique"]["data"] == [x["critique"] for x in results]
    bad = dict(body, inputs=body["inputs"][:1])
    r = httpx.post(f"{server['base']}/v2/models/{MODEL}/infer", json=bad, timeout=60)
    assert r.status_code == 400 and "inputs.steps" in r.json()["error"]


GOOD = {"problem": PROBLEM, "steps": STEPS, "max_tokens": 4}
BAD_BODIES = [
    ({"steps": STEPS}, "'problem': is missing"),
    ({**GOOD, "problem": "   "}, "'problem': is empty"),
    ({**GOOD, "problem": 7}, "'problem': must be a string"),
    ({**GOOD, "steps": "one step"}, "'steps': must be a list"),
    ({**GOOD, "steps": []}, "'steps': is empty"),
    ({**GOOD, "steps": ["ok", None]}, "'steps[1]': must be a string"),
    ({**GOOD, "steps": ["ok", ""]}, "'steps[1]': is empty"),
    ({**GOOD, "steps": ["s"] * 17}, "'steps': has 17 steps, limit 16"),
    ({**GOOD, "problem": "7" * 3900}, "'problem': the critique prompt is too long"),
    ({**GOOD, "steps": ["8" * 1900] * 2}, "'steps': the critique prompt is too long"),
    ({**GOOD, "samples": 0}, "'samples': 0 is outside"),
    ({**GOOD, "samples": 5}, "'samples': 5 is outside"),
    ({**GOOD, "samples": "2"}, "'samples': must be an integer"),
    ({**GOOD, "max_tokens": 1025}, "'max_tokens': 1025 is outside"),
    ({**GOOD, "samples": 3, "max_tokens": 1000}, "'max_tokens': asks for up to 3000 new tokens"),
    ({**GOOD, "steps": [["nested"]]}, "'steps[0]': must be a string"),
    ({**GOOD, "temperature": "hot"}, "'temperature': must be a number"),
    ({**GOOD, "steps_": []}, "'steps_': is not a known field"),
    ({"instances": [GOOD] * 9}, "'instances': has 9 items"),
    ({"instances": [GOOD, {"problem": "x"}]}, "'instances[1].steps': is missing"),
    ([GOOD], "'body': must be a JSON object"),
]


@pytest.mark.parametrize("body,message", BAD_BODIES, ids=[m for _, m in BAD_BODIES])
def test_bad_requests_get_400_naming_the_field(server: dict, body: object, message: str) -> None:
    r = _predict(server["base"], body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_non_json_and_oversized_bodies(server: dict) -> None:
    url = f"{server['base']}/v1/models/{MODEL}:predict"
    headers = {"content-type": "application/json"}
    r = httpx.post(url, content=b'{"problem": "x", "steps": [', headers=headers)
    assert r.status_code == 400 and "'body'" in r.json()["error"]
    r = httpx.post(url, content=b"problem=x", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "'content-type'" in r.json()["error"]
    big = json.dumps({**GOOD, "problem": "x" * 70_000}).encode()
    r = httpx.post(url, content=big, headers=headers)
    assert r.status_code == 413 and "65536" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted while streaming
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    r = httpx.post(url, content=chunks(), headers=headers)
    assert r.status_code == 413
    assert httpx.get(f"{server['base']}/v1/models/{MODEL}").json()["ready"] is True


async def _load(base: str, clients: int, total: int) -> list[int]:
    codes: list[int] = []
    todo = iter(range(total))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:

        async def client() -> None:
            for i in todo:
                body = {"problem": f"{PROBLEM} ({i})", "steps": STEPS, "max_tokens": 4}
                try:
                    r = await http.post(f"/v1/models/{MODEL}:predict", json=body)
                    codes.append(r.status_code)
                except httpx.HTTPError:
                    codes.append(-1)

        await asyncio.gather(*(client() for _ in range(clients)))
    return codes


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_load_many_clients_no_errors_and_batched(server: dict) -> None:
    base = server["base"]
    before = httpx.get(f"{base}/metrics").text
    codes = asyncio.run(_load(base, clients=CLIENTS, total=REQUESTS))
    after = httpx.get(f"{base}/metrics").text
    assert len(codes) == REQUESTS
    assert codes.count(200) == REQUESTS, {c: codes.count(c) for c in set(codes)}
    assert server["proc"].poll() is None  # no crash
    batches = _metric(after, "deepcritic_batch_size_count") - _metric(
        before, "deepcritic_batch_size_count"
    )
    prompts = _metric(after, "deepcritic_batch_size_sum") - _metric(
        before, "deepcritic_batch_size_sum"
    )
    assert prompts == REQUESTS
    # one-by-one serving would make one call per request; batched, the mean batch holds >= 2
    # prompts even on two busy CPU cores (the event loop competes with the generate thread)
    assert batches <= REQUESTS / 2, f"{batches} generate calls for {REQUESTS} requests: not batched"


def _readme_curl() -> str:
    """The curl command of the README's "Serve the critic" block, exactly as written."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Serve the critic") :]
    start = section.index("```bash") + len("```bash")
    lines = section[start : section.index("```", start)].strip().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("curl "))
    command = [lines[first]]
    while command[-1].endswith("\\"):
        command.append(lines[first + len(command)])
    return "\n".join(command)


def test_readme_curl_example_as_written(server: dict, tmp_path: Path) -> None:
    command = _readme_curl()
    assert "localhost:8080/v1/models/deepcritic:predict" in command
    # the command is run unchanged; curl's own config file routes localhost:8080 to this server
    (tmp_path / ".curlrc").write_text(f'connect-to = "localhost:8080:127.0.0.1:{server["port"]}"\n')
    env = {**os.environ, "CURL_HOME": str(tmp_path)}
    done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out) >= {"first_error_step", "verdicts", "critique", "model", "usage"}, out
    assert out["model"]["name"] == MODEL


def test_no_repository_routes_and_readiness_stays_true(server: dict) -> None:
    base = server["base"]
    for path in (f"/v2/repository/models/{MODEL}/unload", f"/v2/repository/models/{MODEL}/load"):
        r = httpx.post(base + path, timeout=10)
        assert r.status_code == 404 and list(r.json()) == ["error"], r.text
    assert httpx.get(f"{base}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{base}/v1/models/{MODEL}").json()["ready"] is True
    r = _predict(base, GOOD, headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200, r.text


def test_adversarial_v2_rows_and_headers_get_400(server: dict) -> None:
    url = f"{server['base']}/v2/models/{MODEL}/infer"
    nested = {"inputs": [
        {"name": "problem", "shape": [1], "datatype": "BYTES", "data": [PROBLEM]},
        {"name": "steps", "shape": [1], "datatype": "BYTES", "data": ["[" * 10_000]},
    ]}  # fmt: skip
    r = httpx.post(url, json=nested, timeout=30)
    assert r.status_code == 400 and "'inputs.steps[0]'" in r.json()["error"], r.text
    forged = {**nested, "parameters": {"steps": json.dumps(STEPS)}}
    r = httpx.post(url, json=forged, timeout=30)
    assert r.status_code == 400 and "'parameters.steps'" in r.json()["error"], r.text
    raw = json.dumps(nested).encode()
    for value in ("x", "-1", str(len(raw) + 10), "99999999999999999999"):
        headers = {"inference-header-content-length": value,
                   "content-type": "application/octet-stream"}  # fmt: skip
        r = httpx.post(url, content=raw, headers=headers, timeout=30)
        assert r.status_code == 400, (value, r.text)
        assert "'inference-header-content-length'" in r.json()["error"]
    assert httpx.get(f"{server['base']}/v2/health/ready").status_code == 200


def test_kserve_python_client_v2_json_and_binary(server: dict) -> None:
    import numpy as np
    from kserve import InferenceRESTClient, RESTConfig
    from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

    def request(binary: bool) -> InferRequest:
        problem = InferInput("problem", [2], "BYTES")
        steps = InferInput("steps", [2], "BYTES")
        problem.set_data_from_numpy(np.array([PROBLEM, "1+1?"], dtype=object), binary_data=binary)
        steps.set_data_from_numpy(
            np.array([json.dumps(STEPS), json.dumps(["2"])], dtype=object), binary_data=binary
        )
        outputs = [RequestedOutput("critique", {"binary_data": binary})]
        return InferRequest(MODEL, [problem, steps], request_id="k1", request_outputs=outputs,
                            parameters={"max_tokens": 4})  # fmt: skip

    async def go() -> list[Any]:
        async with InferenceRESTClient(RESTConfig(protocol="v2")) as client:
            assert await client.is_server_ready(server["base"])
            return [await client.infer(server["base"], request(b), MODEL) for b in (False, True)]

    for response in asyncio.run(go()):
        (out,) = response.outputs
        assert out.name == "critique" and response.id == "k1"
        texts = out.as_numpy().tolist()
        assert len(texts) == 2 and all(isinstance(t, (str, bytes)) for t in texts)


async def _gone_client(port: int, body: dict, leave: asyncio.Event | float) -> None:
    """A real socket that sends a request and disconnects before the answer (when ``leave`` is
    set, or after that many seconds)."""
    data = json.dumps(body).encode()
    head = (f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n")  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + data)
    await writer.drain()
    if isinstance(leave, asyncio.Event):
        await leave.wait()
    else:
        await asyncio.sleep(leave)
    writer.close()
    await writer.wait_closed()


def _queue_depth(base: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    return _metric(text, f'deepcritic_queue_depth{{model_name="{MODEL}"}}')


def _cancelled(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics").text
    return {
        stage: _metric(
            text, f'deepcritic_cancelled_prompts_total{{model_name="{MODEL}",stage="{stage}"}}'
        )
        for stage in ("queued", "generating")
    }


async def _until_depth(base: str, depth: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(_queue_depth, base) < depth:
        assert time.monotonic() < deadline, f"the queue never reached {depth} prompts"
        await asyncio.sleep(0.05)


def test_disconnected_clients_work_is_cancelled(server: dict) -> None:
    base, port = server["base"], server["port"]
    before_text, before = httpx.get(f"{base}/metrics").text, _cancelled(base)
    busy_body = {**GOOD, "max_tokens": 1024, "samples": 2}  # keeps the model busy for seconds

    async def go() -> int:
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            busy = asyncio.ensure_future(http.post(f"/v1/models/{MODEL}:predict", json=busy_body))
            await _until_depth(base, 1)  # the busy prompt is in: its batch starts within 2 ms
            await asyncio.sleep(0.2)
            leave = asyncio.Event()
            gone = {**GOOD, "max_tokens": 1000, "samples": 2}
            clients = [asyncio.ensure_future(_gone_client(port, gone, leave)) for _ in range(8)]
            await _until_depth(base, 9)  # busy + 8 queued prompts
            assert not busy.done(), "the busy request ended before the others could queue"
            leave.set()  # the 8 clients disconnect while their prompts wait in the queue
            await asyncio.gather(*clients)
            return (await busy).status_code

    assert asyncio.run(go()) == 200
    deadline = time.monotonic() + 10
    while _cancelled(base)["queued"] - before["queued"] < 8 and time.monotonic() < deadline:
        time.sleep(0.2)
    after_text, after = httpx.get(f"{base}/metrics").text, _cancelled(base)
    assert after["queued"] - before["queued"] == 8
    # none of the 8 gone prompts was generated: only the busy request's 2 x 1024 tokens were
    generated = _metric(after_text, "deepcritic_completion_tokens_total") - _metric(
        before_text, "deepcritic_completion_tokens_total"
    )
    assert generated == 2048, generated
    assert _queue_depth(base) == 0
    assert _predict(base, GOOD).status_code == 200  # and the server carries on

    async def gone_while_generating() -> None:
        leave = asyncio.Event()
        client = asyncio.ensure_future(_gone_client(port, {**GOOD, "max_tokens": 1024}, leave))
        await _until_depth(base, 1)
        await asyncio.sleep(0.1)  # its generate call has started (1024 tokens take seconds)
        leave.set()
        await client

    asyncio.run(gone_while_generating())
    deadline = time.monotonic() + 15
    while _cancelled(base)["generating"] == after["generating"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _cancelled(base)["generating"] == after["generating"] + 1


def test_a_gone_clients_generation_stops_and_concurrent_clients_get_full_answers(
    server: dict,
) -> None:
    """A client asks for 1024 tokens and disconnects while they generate: its row stops (far
    fewer tokens are generated than asked), while two clients sent with it get every token."""
    base, port = server["base"], server["port"]
    long, full = 1024, 96
    before_text, before = httpx.get(f"{base}/metrics").text, _cancelled(base)

    async def go() -> tuple[list[httpx.Response], float]:
        leave = asyncio.Event()
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            gone = asyncio.ensure_future(_gone_client(port, {**GOOD, "max_tokens": long}, leave))
            others = [
                asyncio.ensure_future(http.post(f"/v1/models/{MODEL}:predict",
                                                json={**GOOD, "max_tokens": full, "problem": p}))
                for p in (PROBLEM, "What is 2 + 2?")
            ]  # fmt: skip
            await _until_depth(base, 3)
            await asyncio.sleep(0.3)  # all three are generating
            left = time.monotonic()
            leave.set()
            await gone
            answers = list(await asyncio.gather(*others))
            return answers, time.monotonic() - left

    answers, seconds = asyncio.run(go())
    for r in answers:
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == full  # untouched by the cancellation
    deadline = time.monotonic() + 15
    while _cancelled(base)["generating"] == before["generating"] and time.monotonic() < deadline:
        time.sleep(0.1)
    after_text = httpx.get(f"{base}/metrics").text
    assert _cancelled(base)["generating"] == before["generating"] + 1
    assert _cancelled(base)["queued"] == before["queued"]
    generated = _metric(after_text, "deepcritic_completion_tokens_total") - _metric(
        before_text, "deepcritic_completion_tokens_total"
    )
    gone_tokens = generated - 2 * full
    print(f"\ncancelled row: {gone_tokens:.0f} of {long} tokens generated; "
          f"the others answered {seconds:.2f} s after the disconnect")  # fmt: skip
    assert 0 < gone_tokens < long // 2, gone_tokens  # it stopped early (about 150-200 here)
    assert _queue_depth(base) == 0
