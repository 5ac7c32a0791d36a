"""The lab around the method: attacks, evaluation, training (R-Adapt+) and fine-tuning (FARE,
TeCoA), reports, captioning/VQA metrics, datasets and checkpoint conversion.

It builds on ``adapters.method`` and never on ``adapters.zoo``: the lab takes a loaded model, and
the zoo (which holds the loaders) may use the lab to train and evaluate its builtin models.
"""
