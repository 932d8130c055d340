"""register: log the checkpoint as MLflow artifacts and create a model version (tagged)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Model

from deepcritic.platform.images import image


@dsl.component(base_image=image("pipeline-base"), install_kfp_package=False)
def register(
    model: Input[Model],
    eval_results: Input[Dataset],
    train_data: Input[Dataset],
    model_name: str,
    base_model: str,
) -> NamedTuple("Registered", [("version", str), ("run_id", str)]):  # noqa: UP006
    """Registers ``model`` with the metrics of ``eval_results/metrics.json``."""
    import os
    from collections import namedtuple

    from deepcritic.registry import RegisterConfig
    from deepcritic.registry import register as do_register
    from deepcritic.runtime import ensure_parent_run

    ensure_parent_run()
    result = do_register(
        RegisterConfig(
            checkpoint=model.path,
            model_name=model_name,
            base_model=base_model,
            data_paths=[train_data.path],
            metrics_json=os.path.join(eval_results.path, "metrics.json"),
            tags={"rl_data_source": str(model.metadata.get("rl_data_source", ""))},
        )
    )
    return namedtuple("Registered", ["version", "run_id"])(result.version, result.run_id)
