"""MLflow model registry for critics: register checkpoints, gate promotion to ``@champion``, pin.

* :mod:`~deepcritic.registry.registering`: ``register(RegisterConfig)``, one version per checkpoint.
* :mod:`~deepcritic.registry.promotion`: ``promote(PromoteConfig)``, the gate (floor, parse rate,
  integrity) and the locked compare-and-move; the invariant it keeps is in its module doc.
* :mod:`~deepcritic.registry.operator`: ``pin`` / ``unpin`` / ``status`` / ``verify``.
* :mod:`~deepcritic.registry.integrity`: ``hash_paths`` and ``verify_checkpoint(path, sha256)``
  (serving checks a download against the version's ``checkpoint_sha256`` tag with it).
* :mod:`~deepcritic.registry.lease`: the MLflow-side lock that serializes alias moves.
* :mod:`~deepcritic.registry.store`: the tags the registry keeps and the reads they share.
"""

from deepcritic.registry.commands import register_cli
from deepcritic.registry.integrity import IntegrityError, Verifier, hash_paths, verify_checkpoint
from deepcritic.registry.operator import OperatorConfig, pin, status, unpin, verify
from deepcritic.registry.promotion import (
    PromoteConfig,
    PromoteResult,
    decide,
    floor_value,
    promote,
)
from deepcritic.registry.registering import RegisterConfig, RegisterResult, parse_rates, register
from deepcritic.registry.store import (
    CHAMPION,
    DEFAULT_MODEL_NAME,
    GATE_TAG,
    SHA256_TAG,
    RegistryError,
)

__all__ = [
    "floor_value",
    "CHAMPION",
    "DEFAULT_MODEL_NAME",
    "GATE_TAG",
    "SHA256_TAG",
    "IntegrityError",
    "OperatorConfig",
    "PromoteConfig",
    "PromoteResult",
    "RegisterConfig",
    "RegisterResult",
    "RegistryError",
    "Verifier",
    "decide",
    "hash_paths",
    "parse_rates",
    "pin",
    "promote",
    "register",
    "register_cli",
    "status",
    "unpin",
    "verify",
    "verify_checkpoint",
]
