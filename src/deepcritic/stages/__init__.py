"""The pipeline's stages, one module (or package) each, in pipeline order.

Each has the same shape: a typed ``<Stage>Config`` dataclass (YAML preset + CLI overrides, paper
values commented), ``run(config) -> <Stage>Result`` and ``register_cli(subparsers)``.

* :mod:`~deepcritic.stages.prepare`: labelled solutions from any loader spec, deduplicated, split.
* :mod:`~deepcritic.stages.seed`: deliberate seed critiques from a teacher (initial, in-depth, merge).
* :mod:`~deepcritic.stages.sft`: supervised fine-tuning of the critic (TRL ``SFTTrainer``).
* :mod:`~deepcritic.stages.mc`: Monte Carlo first-error labels by rolling out every step prefix.
* :mod:`~deepcritic.stages.grpo`: RL from the SFT model (TRL ``GRPOTrainer``, first-error reward).
* :mod:`~deepcritic.stages.evaluate`: ProcessBench-style F1 suites, greedy and Maj@k.
* :mod:`~deepcritic.stages.learning`: base -> SFT -> GRPO on held-out items (the learning benchmark).

Using a trained critic (verified voting, critique-guided refinement) lives in :mod:`deepcritic.critic`.
"""
