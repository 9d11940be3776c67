"""``hf-gaf`` and ``python -m hf_gaf``: the command of the ``[recipes]`` wing (:mod:`hf_gaf.harness.cli`), or one
line naming the extra to install when it is missing. The only library file that imports the harness."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from .harness.cli import main as cli
    except ImportError as err:
        print(f"hf-gaf: error: {err}", file=sys.stderr)
        return 2
    return cli()


if __name__ == "__main__":
    sys.exit(main())
