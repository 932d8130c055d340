"""promote: the gate (floor F1, parseable-verdict rate, sha256-verified artifacts), then move
@champion to the new version only if its avg F1 is strictly better (+ margin) and no operator pin
holds the alias."""

from typing import NamedTuple

from kfp import dsl

from deepcritic.platform.images import image


@dsl.component(base_image=image("pipeline-base"), install_kfp_package=False)
def promote(
    model_name: str,
    version: str,
    margin: float,
    floor: str = "base",
    base_f1: float = 0.0,
    min_parse_rate: float = 50.0,
) -> NamedTuple("Promotion", [("promoted", bool), ("champion", str), ("reason", str)]):  # noqa: UP006
    """The gate; the decision and its reason are also tags on the model version.

    ``floor``: ``base`` (the candidate must beat ``base_f1``, the base model's avg F1 on the same
    benchmarks), ``none`` or a number; ``min_parse_rate``: % of items with a readable verdict.
    """
    from collections import namedtuple

    from deepcritic.registry import PromoteConfig, floor_value
    from deepcritic.registry import promote as do_promote
    from deepcritic.runtime import ensure_parent_run

    ensure_parent_run()
    r = do_promote(
        PromoteConfig(
            model_name=model_name,
            version=version,
            margin=margin,
            floor_f1=floor_value(floor, base_f1),
            min_parse_rate=min_parse_rate,
        )
    )
    champion = r.version if r.promoted else str(r.champion_version or "")
    print(f"promotion of {model_name} v{version}: {r.promoted} ({r.reason})")
    return namedtuple("Promotion", ["promoted", "champion", "reason"])(
        r.promoted, champion, r.reason
    )
