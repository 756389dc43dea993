"""``python -m mswelu.generate``: see :mod:`mswelu.generate.cli`."""

from mswelu.generate.cli import main

if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
