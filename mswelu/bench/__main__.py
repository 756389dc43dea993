"""``python -m mswelu.bench NAME [options]``: one benchmark per call (NAME in :data:`BENCHMARKS`)."""

from __future__ import annotations

import importlib
import sys

from mswelu.base.errors import unknown_choice
from mswelu.bench import BENCHMARKS


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHMARKS:
        known = ", ".join(BENCHMARKS)
        print(f"usage: python -m mswelu.bench {{{known}}} [--json] [options]", file=sys.stderr)
        if argv and argv[0] not in ("-h", "--help"):
            print(unknown_choice("benchmark", argv[0], BENCHMARKS), file=sys.stderr)
            return 2
        return 0
    module = importlib.import_module(BENCHMARKS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
