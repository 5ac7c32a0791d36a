"""The method: what a frozen vision encoder needs to get robust mode, and nothing else.

``config`` (adapter settings and fingerprints), ``lowpass`` (the Gaussian Input Filter), ``anchor``
(the Fixed Robustness Anchor's data and blend), ``family`` (the base types every family builds on),
``clip`` and ``qwen`` (where block 0 lives in each family), ``model`` (injection, per-sample
control), ``acquire`` (training-free and model-guided anchors), ``io`` (adapter files) and
``digest`` (weight fingerprints). It imports neither ``adapters.lab`` nor ``adapters.zoo``
(an import-linter contract in pyproject.toml holds that).
"""
