"""A promoter process that stops while holding the alias lock (for fault tests: kill it there).

``python -m support.paused_promoter URI MODEL VERSION TTL_S FLAG FLOOR`` runs the real
:func:`deepcritic.registry.promote`; once the alias lock is taken it writes
``{"lease", "expires", "pid"}`` to FLAG (atomically) and waits forever, holding the lock.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from deepcritic.registry import PromoteConfig, promote
from deepcritic.registry.lease import Lease


def main(argv: list[str]) -> None:
    uri, model, version, ttl, flag, floor = argv
    config = PromoteConfig(model_name=model, version=version, tracking_uri=uri,
                           lock_ttl_s=float(ttl), floor_f1=float(floor))  # fmt: skip

    def stop_here(lease: Lease) -> None:
        tmp = Path(flag + ".tmp")
        tmp.write_text(json.dumps({"lease": lease.name, "expires": lease.expires,
                                   "pid": os.getpid()}))  # fmt: skip
        tmp.rename(flag)
        threading.Event().wait()  # holds the lock until killed

    promote(config, on_locked=stop_here)
    raise SystemExit("the promoter was expected to be killed while holding the lock")


if __name__ == "__main__":
    main(sys.argv[1:])
