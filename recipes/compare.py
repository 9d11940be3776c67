"""Run a recipe over presets x seeds and write results.md, results.json and curves.png.

    python recipes/compare.py --script recipes/classification/train.py --presets sgd gaf --seeds 0 1 2 \
        --metric eval_accuracy --out runs/digits -- --dataset digits --num_train_epochs 5

See hf_gaf.harness.compare for what each file holds (the same runner is `hf-gaf compare`).
"""

import sys

from hf_gaf.harness.compare import main

if __name__ == "__main__":
    sys.exit(main())
