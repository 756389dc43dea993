"""CLI: ``python -m mswelu.data prepare --source SRC --out DIR ...`` / ``python -m mswelu.data info DIR``."""

from __future__ import annotations

import argparse
import json
import sys

from mswelu.base.errors import choice, plain_text
from mswelu.base.fs import explain_os_error
from mswelu.base.paths import display_path
from mswelu.data import check_shards, load_meta, prepare, summary_rows
from mswelu.data.shards import output_dir
from mswelu.data.sources import HF_PRESETS


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mswelu.data", description=plain_text(__doc__))
    sub = p.add_subparsers(dest="command", required=True)
    pp = sub.add_parser("prepare", help="tokenize a source into train.bin / val.bin / meta.json")
    pp.add_argument(
        "--source",
        default="default",
        help="'default' (Shakespeare, offline), 'pycode' (Python code and docs from pinned PyPI sdists), "
        f"a preset ({', '.join(HF_PRESETS)}), a local "
        ".txt/.jsonl/.parquet file, folder or glob, or a Hub dataset owner/name[:config]",
    )
    pp.add_argument("--out", default=None, help="output folder (default: data/<source-name>)")
    pp.add_argument(
        "--tokenizer",
        default="gpt2",
        help="'gpt2' (offline), 'bpe:N' (a byte-level BPE of N tokens trained on the training split, "
        "saved in the dataset folder), a tokenizer.json path or a Hub name",
    )
    pp.add_argument("--val-fraction", type=float, default=0.05)
    pp.add_argument("--max-tokens", type=int, default=None)
    pp.add_argument("--seed", type=int, default=0)
    pp.add_argument(
        "--folds",
        type=int,
        default=None,
        help="K disjoint validation folds of val-fraction each (with --fold; default: the plain split)",
    )
    pp.add_argument(
        "--fold",
        type=int,
        default=None,
        help="which fold: 1..K, or 0 for the scheme's tuning split (disjoint from every fold's validation)",
    )
    pp.add_argument(
        "--text-field", default="text", help="field/column holding the text (jsonl, parquet, Hub)"
    )
    pp.add_argument(
        "--txt-sample-by",
        default="document",
        type=choice("--txt-sample-by value", ("document", "paragraph", "line")),
        metavar="{document,paragraph,line}",
        help="what one document is in .txt files",
    )
    pp.add_argument("--force", action="store_true", help="rebuild even when the settings match")
    pp.add_argument("--no-progress", action="store_true")
    ip = sub.add_parser("info", help="summarise a prepared folder")
    ip.add_argument("path")
    ip.add_argument("--json", action="store_true", help="print meta.json")
    return p


def _print_summary(meta: dict) -> None:
    print(
        f"tokenizer {meta['tokenizer']} (vocab {meta['vocab_size']}, eos {meta['eos_id']}, {meta['dtype']})"
    )
    print(f"source    {meta.get('source_description', meta.get('source'))}")
    fold = meta.get("fold")
    print(
        f"seed {meta.get('seed')}  val_fraction {meta.get('val_fraction')}  "
        f"max_tokens {meta.get('max_tokens')}"
        + (f"  fold {fold['fold']} of {fold['folds']} ({fold['role']})" if fold else "")
    )
    print(f"{'split':<6} {'documents':>10} {'tokens':>12} {'bytes':>12} {'bytes/token':>12}")
    for r in summary_rows(meta):
        print(
            f"{r['split']:<6} {r['documents']:>10} {r['tokens']:>12} {r['bytes']:>12} "
            f"{r['bytes_per_token']:>12}"
        )


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "prepare":
            out = args.out
            if out is None and args.folds is not None:  # a fold never replaces the plain split's folder
                plain = output_dir(args.source)
                out = plain.with_name(f"{plain.name}-fold{args.fold}of{args.folds}")
            meta = prepare(
                args.source,
                out=out,
                tokenizer=args.tokenizer,
                val_fraction=args.val_fraction,
                max_tokens=args.max_tokens,
                seed=args.seed,
                text_field=args.text_field,
                progress=not args.no_progress,
                txt_sample_by=args.txt_sample_by,
                force=args.force,
                folds=args.folds,
                fold=args.fold,
            )
            _print_summary(meta)
            print(f"dataset   {display_path(output_dir(args.source, out))}  (use it with --data)")
        else:
            meta = check_shards(args.path, load_meta(args.path))
            if args.json:
                print(json.dumps(meta, indent=2))
            else:
                _print_summary(meta)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # read-only or full disk: no traceback, and the partial build is gone
        print(f"error: {explain_os_error(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
