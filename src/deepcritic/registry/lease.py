"""Mutual exclusion for registry writes, kept in MLflow itself (works against a remote server).

MLflow has no compare-and-set on aliases or tags, and a remote tracking server shares no file
system with its clients, so a file lock cannot serialize promoters on different machines. One
MLflow operation *is* atomic everywhere (SQLite, PostgreSQL, through the REST API): creating a
registered model whose name exists fails with ``RESOURCE_ALREADY_EXISTS``. A lock is therefore a
sequence of *generations*, registered models named ``<model>.lock.<scope>.<gen>``:

* acquire: read the newest generation g; when there is none, or g is released (tag
  ``state=released``) or expired (tag ``expires``, the holder's ttl), create g+1. Only one
  contender can create it. The creator then re-lists: a newer generation than its own means it
  read a stale listing (an old generation had been cleaned up), so it gives its own up and retries.
* release: tag the generation ``state=released``; the next holder deletes older generations.
* a holder whose ttl ran out may have been overtaken: :meth:`Lease.fence` (called right before
  every alias write) refuses to write when a newer generation exists or the ttl is spent.

Work under the lock is a few metadata calls (downloads and hashing happen before taking it), far
below the ttl, so a live holder is never overtaken; a crashed holder blocks others for one ttl.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from deepcritic.registry.store import RegistryError, error_code

log = logging.getLogger(__name__)

RELEASED = "released"
_TRANSIENT_ATTEMPTS = 6


class LeaseError(RegistryError):
    """The lock could not be taken in time, or was lost before a write."""


@dataclass
class Lease:
    client: Any
    prefix: str
    gen: int
    owner: str
    expires: float  # epoch seconds (the holder's clock)

    @property
    def name(self) -> str:
        return f"{self.prefix}{self.gen:010d}"

    def fence(self) -> None:
        """Raise :class:`LeaseError` unless this lease is still the newest and unexpired."""
        if time.time() >= self.expires:
            raise LeaseError(f"lock {self.name}: ttl ran out before the write; nothing written")
        newest = _generations(self.client, self.prefix)
        if newest and newest[-1][0] > self.gen:
            raise LeaseError(f"lock {self.name}: overtaken by generation {newest[-1][0]}")


def _generations(client: Any, prefix: str) -> list[tuple[int, Any]]:
    """Existing lock generations, oldest first."""
    found = client.search_registered_models(
        filter_string=f"name LIKE '{prefix}%'", max_results=1000
    )
    gens = []
    for rm in found:
        rest = rm.name[len(prefix) :]
        if rm.name.startswith(prefix) and rest.isdigit():
            gens.append((int(rest), rm))
    return sorted(gens, key=lambda g: g[0])


def _is_free(rm: Any, now: float) -> bool:
    tags = dict(rm.tags or {})
    if tags.get("state") == RELEASED:
        return True
    try:
        return float(tags.get("expires", "0")) <= now
    except ValueError:
        return True


def _create(client: Any, lease: Lease) -> bool:
    """Create the generation; True when this call (and no one else) created it."""
    from mlflow.exceptions import MlflowException

    tags = {"owner": lease.owner, "expires": f"{lease.expires:.3f}", "state": "held"}
    for attempt in range(_TRANSIENT_ATTEMPTS):
        try:
            client.create_registered_model(
                lease.name, tags=tags, description="deepcritic registry lock (safe to delete idle)"
            )
            return True
        except MlflowException as e:
            code = error_code(e)
            if code == "RESOURCE_ALREADY_EXISTS":  # ours if an earlier attempt did land
                owner = dict(client.get_registered_model(lease.name).tags or {}).get("owner")
                return owner == lease.owner
            if code in ("PERMISSION_DENIED", "UNAUTHENTICATED", "INVALID_PARAMETER_VALUE"):
                raise
            log.debug("lock %s: transient error %s (attempt %d)", lease.name, code, attempt + 1)
            time.sleep(0.05 * 2**attempt * random.uniform(0.5, 1.0))
    return False


def _set_state(client: Any, name: str, state: str) -> None:
    try:
        client.set_registered_model_tag(name, "state", state)
    except Exception as e:  # it expires anyway
        log.warning("lock %s: could not mark %s (%s); it expires with its ttl", name, state, e)


def _cleanup(client: Any, older: list[tuple[int, Any]]) -> None:
    for _, rm in older:
        try:
            client.delete_registered_model(rm.name)
        except Exception as e:  # another user's generation, or already gone: harmless
            log.debug("lock %s not deleted: %s", rm.name, e)


def acquire(
    client: Any, model: str, scope: str, *, ttl_s: float = 120.0, timeout_s: float = 300.0
) -> Lease:
    """Take the ``scope`` lock of ``model`` (see module doc); LeaseError after ``timeout_s``."""
    prefix = f"{model}.lock.{scope}."
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    deadline, delay = time.monotonic() + timeout_s, 0.02
    while True:
        gens = _generations(client, prefix)
        top = gens[-1][0] if gens else 0
        if not gens or _is_free(gens[-1][1], time.time()):
            lease = Lease(client, prefix, top + 1, owner, time.time() + ttl_s)
            if _create(client, lease):
                newest = _generations(client, prefix)
                if newest and newest[-1][0] == lease.gen:
                    _cleanup(client, [g for g in newest if g[0] < lease.gen])
                    return lease
                _set_state(client, lease.name, RELEASED)  # stale listing: someone is ahead
        if time.monotonic() > deadline:
            raise LeaseError(f"lock {prefix}*: not acquired in {timeout_s:g}s (held by {top})")
        time.sleep(random.uniform(delay / 2, delay))
        delay = min(delay * 1.5, 0.25)


@contextlib.contextmanager
def hold(
    client: Any, model: str, scope: str, *, ttl_s: float = 120.0, timeout_s: float = 300.0
) -> Iterator[Lease]:
    """``with hold(client, "deepcritic", "champion") as lease:`` ... ``lease.fence()`` ... writes."""
    lease = acquire(client, model, scope, ttl_s=ttl_s, timeout_s=timeout_s)
    try:
        yield lease
    finally:
        _set_state(client, lease.name, RELEASED)
