"""The recipes: one readable script per experiment, runnable as files (``python recipes/...``) and, once
installed, importable as ``hf_gaf.recipes.*`` (the comparison runner and the demo find them there)."""
