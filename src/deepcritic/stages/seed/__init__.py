"""Stage 1 of DeepCritic: deliberate seed critiques from a teacher LLM.

Per labelled step: an initial critique, an in-depth critique (keep the first sample whose verdict
matches the label), and a merge of both into one deliberate critique; solutions whose every
in-depth verdict matches are kept, all-correct easy ones are capped, and the result is formatted
as chat data for SFT. ``prompt_set`` picks the project's prompts or the authors'
(:mod:`deepcritic.stages.seed.reference_set`). Sharded (``--shard i/N``) and resumable; see :mod:`deepcritic.stages.seed.stage`.
"""

from deepcritic.stages.seed.config import SeedConfig, SubstepSampling, parse_shard
from deepcritic.stages.seed.stage import SeedResult, register_cli, run

__all__ = ["SeedConfig", "SeedResult", "SubstepSampling", "parse_shard", "register_cli", "run"]
