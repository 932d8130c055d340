"""Using a trained critic at test time.

* :mod:`~deepcritic.critic.voting`: critic-verified majority voting over sampled solutions.
* :mod:`~deepcritic.critic.refine`: critique-guided refinement (rewrite from the first wrong step).
"""
