"""The experiment harness (``pip install 'hf_gaf[recipes]'``): what the recipes under ``recipes/`` run on, and
the ``hf-gaf`` command. Presets (:mod:`~hf_gaf.harness.presets`), experiment-only flags and trainers
(:mod:`~hf_gaf.harness.experiment_args`), one run with its ``metrics.json`` (:mod:`~hf_gaf.harness.training`,
:mod:`~hf_gaf.harness.metrics_json`, :mod:`~hf_gaf.harness.detection_training`), the comparison runner
(:mod:`~hf_gaf.harness.compare`), the demo, plots and the CLI. The library (core, ``trainer``,
``detection``, ``metrics``) never imports this package."""

from .._extras import require_extra

require_extra("hf_gaf.harness", "recipes")
