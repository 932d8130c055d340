"""The registry against a real remote ``mlflow server`` (HTTP, SQLite backend, proxied artifacts).

Rounds of concurrent registrations, promotions and operator pins/unpins/manual rollbacks, drawn
from a seeded RNG, with seeded random delays before every MLflow call; after every round (and for
every alias value an observer thread saw during it) the invariant must hold:

* the alias points only at an intact (stored files hash to ``checkpoint_sha256``) version whose F1
  beats the floor and whose parse rate is high enough;
* without an operator action it never moves to a worse version than it held;
* an operator's pin or manual move holds until unpinned;
* losers report ``promoted=False``; one checkpoint is one version however many register it at once.

``DEEPCRITIC_RACE_SEED`` picks another schedule (default 16).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from deepcritic.registry import (
    OperatorConfig,
    PromoteConfig,
    RegisterConfig,
    RegistryError,
    hash_paths,
    pin,
    promote,
    register,
    unpin,
)
from deepcritic.registry import store as registry_store
from support.checkpoints import delete_artifacts, make_checkpoint, replace_weights, stored_folder
from support.mlflow_server import Server

NAME = "race"
FLOOR, MIN_PARSE = 15.0, 50.0
SEED = int(os.environ.get("DEEPCRITIC_RACE_SEED", "16"))
MAX_JITTER_S = 0.01


class _Jittery:
    """An MlflowClient that sleeps a seeded random delay before every call (new interleavings)."""

    def __init__(self, inner: Any, rng: random.Random):
        self._inner, self._rng = inner, rng

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            time.sleep(self._rng.random() * MAX_JITTER_S)
            return attr(*args, **kwargs)

        return call


@dataclass
class Ckpt:
    path: Path
    f1: float
    parse: float
    tampered: bool = False  # its stored copy is broken after registration
    sha: str = ""

    @property
    def good(self) -> bool:
        return self.f1 > FLOOR and self.parse >= MIN_PARSE and not self.tampered


@dataclass
class World:
    server: Server
    ckpts: dict[int, Ckpt]
    by_sha: dict[str, Ckpt] = field(default_factory=dict)
    pinned: str | None = None  # the operator's pin (or manual move), as the test made it
    holder: str | None = None
    tampered: dict[int, str] = field(default_factory=dict)  # checkpoint -> its broken version
    log: list[str] = field(default_factory=list)

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(self.server.uri, self.server.uri)

    def good_versions(self) -> dict[str, float]:
        """Versions the alias may hold: intact on disk, above the floor, enough verdicts."""
        out = {}
        for mv in self.client().search_model_versions(f"name='{NAME}'", max_results=1000):
            ck = self.by_sha.get(mv.tags.get("checkpoint_sha256", ""))
            folder = stored_folder(mv.source, self.server.artifacts)
            intact = folder.is_dir() and hash_paths([folder]) == mv.tags["checkpoint_sha256"]
            if ck is not None and ck.good and intact:
                out[str(mv.version)] = ck.f1
        return out


def _setup(server: Server, tmp: Path) -> World:
    rng = random.Random(SEED)
    f1s = rng.sample(range(20, 90), 6)
    ckpts = {i: Ckpt(make_checkpoint(tmp, i), float(f), 90.0) for i, f in enumerate(f1s)}
    ckpts[6] = Ckpt(make_checkpoint(tmp, 6), 10.0, 90.0)  # below the floor
    ckpts[7] = Ckpt(make_checkpoint(tmp, 7), 95.0, 20.0)  # hardly ever writes a verdict
    ckpts[8] = Ckpt(
        make_checkpoint(tmp, 8), 97.0, 90.0, True
    )  # weights replaced after registration
    ckpts[9] = Ckpt(
        make_checkpoint(tmp, 9), 99.0, 90.0, True
    )  # artifacts deleted after registration
    world = World(server, ckpts)
    for ck in ckpts.values():
        ck.sha = hash_paths([ck.path])
        world.by_sha[ck.sha] = ck
    return world


def _register(world: World, i: int) -> str:
    ck = world.ckpts[i]
    cfg = RegisterConfig(checkpoint=str(ck.path), model_name=NAME,
                         metrics={"avg_f1": ck.f1, "avg_parse_rate": ck.parse})  # fmt: skip
    return register(cfg).version


def _op_promote(world: World, i: int) -> tuple[str, Any]:
    version = world.tampered.get(i) or _register(world, i)  # the pipeline: register, then promote
    cfg = PromoteConfig(model_name=NAME, version=version, floor_f1=FLOOR, min_parse_rate=MIN_PARSE)
    return version, promote(cfg)


def _run_round(world: World, ops: list[tuple[str, Any]], rnd: int) -> list[tuple[str, Any, Any]]:
    """Run the ops at once (each with its own jittered client); observe the alias meanwhile."""
    barrier = threading.Barrier(len(ops))
    results: list[tuple[str, Any, Any]] = [("", None, None)] * len(ops)
    seen: list[str | None] = []
    stop = threading.Event()

    def observe() -> None:
        client = world.client()
        while not stop.is_set():
            holder = registry_store.alias_holder(client, NAME, "champion")
            seen.append(str(holder.version) if holder is not None else None)
            time.sleep(0.02)

    def run(k: int, kind: str, arg: Any) -> None:
        _RNG.rng = random.Random(f"{SEED}/{rnd}/{k}")
        barrier.wait()
        try:
            results[k] = (kind, arg, _dispatch(world, kind, arg))
        except RegistryError as e:  # refused (e.g. a pin of a version not yet gated)
            results[k] = (kind, arg, e)

    watcher = threading.Thread(target=observe)
    watcher.start()
    threads = [threading.Thread(target=run, args=(k, *op)) for k, op in enumerate(ops)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.set()
    watcher.join()
    holder = registry_store.alias_holder(world.client(), NAME, "champion")
    seen.append(str(holder.version) if holder is not None else None)
    _check_round(world, results, seen)
    return results


class _ThreadRng(threading.local):
    rng: random.Random = random.Random(0)


_RNG = _ThreadRng()


def _dispatch(world: World, kind: str, arg: Any) -> Any:
    if kind == "register":
        return _register(world, arg)
    if kind == "promote":
        return _op_promote(world, arg)
    if kind == "pin":
        return pin(OperatorConfig(model_name=NAME, version=arg, reason="rollback"))
    if kind == "unpin":
        return unpin(OperatorConfig(model_name=NAME))
    if kind == "ui-rollback":  # an operator moves the alias by hand (no deepcritic involved)
        world.client().set_registered_model_alias(NAME, "champion", arg)
        return arg
    raise AssertionError(kind)


def _check_round(world: World, results: list[tuple[str, Any, Any]], seen: list[str | None]) -> None:
    good = world.good_versions()
    kinds = {kind for kind, _, _ in results}
    moved_by_operator = bool(kinds & {"pin", "ui-rollback"})
    before, pinned_before = world.holder, world.pinned
    for kind, arg, out in results:  # what the operator asked for in this round
        if kind == "ui-rollback" or (kind == "pin" and not isinstance(out, Exception)):
            world.pinned = arg
        elif kind == "unpin":
            world.pinned = None
    final, moves = seen[-1], _dedup(seen)
    world.log.append(f"{[(k, a) for k, a, _ in results]}: alias {moves}")
    for v in moves:  # every value anyone could have read during the round
        assert v is None or v in good, f"alias at v{v}, not intact/gated: {world.log}"
    assert before is None or final is not None, world.log
    if world.pinned is not None and "unpin" not in kinds:
        assert final == world.pinned, f"the operator's pin/rollback was undone: {world.log}"
    if not moved_by_operator:  # promotions (and an unpin) only: never to a worse version
        scores = [good[v] for v in moves if v is not None]
        assert scores == sorted(scores), f"alias moved to a worse version: {world.log}"
        if pinned_before is not None and "unpin" not in kinds:
            assert moves == [pinned_before], f"pin not respected: {world.log}"
    held = pinned_before if not moved_by_operator and "unpin" not in kinds else None
    _check_promotions(results, good, None if moved_by_operator else before, held)
    _check_one_version_per_checkpoint(world)
    world.holder = final


def _check_promotions(
    results: list[tuple[str, Any, Any]],
    good: dict[str, float],
    before: str | None,
    pinned: str | None,
) -> None:
    """Bad candidates and losers report promoted=False: a reported winner really was better."""
    for kind, _, out in results:
        if kind != "promote":
            continue
        version, res = out
        if version not in good:
            assert not res.promoted, f"v{version} (bad) reported promoted: {res}"
        elif pinned is not None:  # pinned all round long
            assert res.promoted is (version == pinned), f"pinned to v{pinned}, yet: {res}"
        elif before is not None and before in good and version != before:
            beats = good[version] > good[before]
            if not beats:
                assert not res.promoted, f"v{version} lost to v{before} but says: {res}"


def _check_one_version_per_checkpoint(world: World) -> None:
    versions = world.client().search_model_versions(f"name='{NAME}'", max_results=1000)
    shas = [mv.tags["checkpoint_sha256"] for mv in versions
            if not mv.tags.get("deepcritic.integrity", "").startswith("failed")]  # fmt: skip
    dupes = {s for s in shas if shas.count(s) > 1}
    assert not dupes, f"one checkpoint registered as several versions: {dupes}"


def _dedup(seen: list[str | None]) -> list[str | None]:
    return [v for k, v in enumerate(seen) if k == 0 or seen[k - 1] != v]


def _schedule(world: World, rng: random.Random) -> Iterator[list[tuple[str, Any]]]:
    """Rounds of concurrent operations; random choices, but every kind of race appears."""
    good = [i for i, c in world.ckpts.items() if c.good]

    def promotions(lo: int, hi: int) -> list[tuple[str, Any]]:
        return [("promote", rng.choice([*good, 6, 7, 8])) for _ in range(rng.randint(lo, hi))]

    yield [
        ("register", good[0]),
        ("register", good[0]),
        ("register", good[1]),
        ("register", good[1]),
    ]
    yield [("promote", i) for i in rng.sample(good, 4)]  # the 4 concurrent promoters
    yield [("promote", 6), ("promote", 7), ("promote", 8), ("promote", 9)]  # all fail the gate
    yield promotions(2, 4)
    yield [("pin", _gated(world, rng)), *promotions(1, 2)]  # an operator rolls back
    yield promotions(2, 3)  # ... and the pin holds
    yield [("unpin", None), *promotions(1, 2)]
    yield [("ui-rollback", _gated(world, rng, but=world.holder))]  # by hand, in the MLflow UI
    yield promotions(2, 3)  # ... which holds too
    yield [("unpin", None)]
    top = sorted(good, key=lambda i: world.ckpts[i].f1)[-2:]
    yield [("promote", i) for i in {*top, *rng.sample(good, 2)}]  # converge on the best


def _gated(world: World, rng: random.Random, but: str | None = None) -> str:
    client = world.client()
    gated = [str(mv.version) for mv in client.search_model_versions(f"name='{NAME}'")
             if mv.tags.get("deepcritic.gate") == "passed" and str(mv.version) != but]  # fmt: skip
    return rng.choice(sorted(gated))


def _jittery_client(real: Callable[[str | None], Any]) -> Callable[[str | None], Any]:
    return lambda uri: _Jittery(real(uri), _RNG.rng)


def test_concurrent_registry_operations_keep_the_invariant(
    mlflow_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "registry-race")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.delenv("DEEPCRITIC_PARENT_RUN_ID", raising=False)
    MlflowClient(mlflow_server.uri).create_experiment("registry-race")  # proxied artifacts
    world = _setup(mlflow_server, tmp_path)
    for i, damage in ((8, replace_weights), (9, delete_artifacts)):
        world.tampered[i] = _register(world, i)
        mv = world.client().get_model_version(NAME, world.tampered[i])
        damage(stored_folder(mv.source, mlflow_server.artifacts))
    monkeypatch.setattr(registry_store, "client", _jittery_client(registry_store.client))
    rng = random.Random(SEED)
    for rnd, ops in enumerate(_schedule(world, rng)):
        t0 = time.monotonic()
        _run_round(world, ops, rnd)
        world.log.append(f"  ({time.monotonic() - t0:.1f}s)")
    best = max((c.f1, c.sha) for c in world.ckpts.values() if c.good)
    holder = registry_store.alias_holder(world.client(), NAME, "champion")
    assert holder is not None and holder.tags["checkpoint_sha256"] == best[1], world.log
