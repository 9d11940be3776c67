"""A stand-in recipe for the runners' tests: parses the flags a runner passes, appends its command line to
``$FAKE_RECIPE_LOG`` and writes a metrics.json whose final eval_accuracy is a known function of the flags."""

import argparse
import json
import os
import sys
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--preset", required=True)
parser.add_argument("--seed", type=int, required=True)
parser.add_argument("--output_dir", required=True)
parser.add_argument("--gaf_alpha", type=float, default=0.1)
parser.add_argument("--gaf_beta", type=float, default=20.0)
parser.add_argument("--gaf_placement", default="update")
parser.add_argument("--fail", action="store_true")
args, _ = parser.parse_known_args()
with open(os.environ["FAKE_RECIPE_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\n")
if args.fail:
    sys.exit("fake failure")
value = (
    0.5 + 0.01 * args.seed
    if args.preset == "sgd"
    else 0.5 + 0.1 * args.gaf_alpha + 0.001 * args.gaf_beta + 0.01 * args.seed
)
Path(args.output_dir).mkdir(parents=True, exist_ok=True)
(Path(args.output_dir) / "metrics.json").write_text(
    json.dumps(
        {
            "final": {"eval_accuracy": value},
            "epochs": [{"epoch": 1, "eval_accuracy": value, "epoch_time_s": 1.0, "train_images_per_s": 10.0}],
            "train_images_per_s": 10.0,
        }
    )
)
