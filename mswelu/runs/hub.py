"""What makes a run's ``final/`` load like any Hugging Face model (with ``import mswelu`` registering
``mamba_swelu``): its tokenizer as a ``PreTrainedTokenizerFast``, ``generation_config.json`` and a model card.
The tokenizer is the one the data was prepared with: GPT-2's built offline (the ids of
:class:`mswelu.data.tokenizer.GPT2Tokenizer`), a corpus BPE's ``tokenizer.json``, or a local Hugging Face one.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mswelu.base.progress import log
from mswelu.data.tokenizer import GPT2_EOS, gpt2_vocab_files
from mswelu.runs.folder import MODEL_CARD

__all__ = ["hf_tokenizer", "launch_command", "model_card", "write_final_files"]


def hf_tokenizer(name: str, model_max_length: int | None = None) -> Any:
    """A ``PreTrainedTokenizerFast`` for a recorded name; ValueError when not buildable offline."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    extra = {"model_max_length": model_max_length} if model_max_length else {}
    if name.startswith("task:"):  # mswelu.data.tasks: the ids of a synthetic task stand for no text
        raise ValueError(f"{name} is a synthetic task, whose token ids have no tokenizer")
    if name == "gpt2":
        enc, merges = gpt2_vocab_files()
        tok = Tokenizer(models.BPE.from_file(str(enc), str(merges)))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([AddedToken(GPT2_EOS, special=True)])
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, eos_token=GPT2_EOS, bos_token=GPT2_EOS, unk_token=GPT2_EOS, **extra
        )
    path = Path(name).expanduser()
    if path.suffix == ".json":
        if not path.is_file():
            raise ValueError(f"tokenizer file not found: {path}")
        tok = Tokenizer.from_file(str(path))
        vocab = tok.get_vocab(with_added_tokens=True)
        eos = GPT2_EOS if GPT2_EOS in vocab else None
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, **extra)
    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True, **extra)
    except Exception as exc:  # noqa: BLE001 - any failure means "not available offline"
        raise ValueError(f"tokenizer {name!r} is not available offline ({type(exc).__name__})") from None


def launch_command() -> str:
    """How this process was started, as a shell command (or what started it)."""
    argv = list(sys.argv)
    head = Path(argv[0]).as_posix() if argv else ""
    if head.endswith("mswelu/train.py"):
        return shlex.join(["python", "-m", "mswelu.train", *argv[1:]])
    if "ipykernel" in head or "ipykernel" in sys.modules:
        return "mswelu.train.train(config) from a notebook (notebooks/03_train.ipynb or 05); config below"
    return shlex.join(argv) if argv else "mswelu.train.train(config); config below"


def _table(rows: list[tuple[str, Any]]) -> str:
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows if v is not None)])


def _num(value: Any, fmt: str) -> str | None:
    return None if value is None else format(value, fmt)


def _shape_table(record: Mapping[str, Any], values: Mapping[str, Mapping[str, float]]) -> str:
    """One row per slot with shape parameters: where it sits, its activation, each parameter's value."""
    params = [p for p in values if values[p]]
    if not params:
        return "This model has no activation shape parameters."
    slots = {s["name"]: s for s in record.get("_shape_slots") or () if isinstance(s, dict)}
    names = list(dict.fromkeys(n for p in params for n in values[p]))
    lines = [
        "| slot | activation | group | layer | " + " | ".join(params) + " |",
        "|---|---|---|---:|" + "---:|" * len(params),
    ]
    for n in names:
        s = slots.get(n, {})
        learned = set(s.get("learnable") or ())
        cells = [
            f"{values[p][n]:.4f}{'' if p in learned or not s else ' (fixed)'}" if n in values[p] else ""
            for p in params
        ]
        layer = "" if s.get("layer") is None else s["layer"]
        lines.append(
            f"| `{n}` | {s.get('activation', '')} | {s.get('group', '')} | {layer} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def model_card(
    record: Mapping[str, Any],
    figures: Mapping[str, Any],
    tokenizer: str,
    meta: Mapping[str, Any] | None = None,
) -> str:
    """The model card (``README.md``) of a run's ``final/``."""
    meta = meta or {}
    mc = record.get("_model_config") or {}
    name = record.get("run_name") or "mswelu-run"
    train_cfg = {k: v for k, v in record.items() if not k.startswith("_")}
    splits = meta.get("splits") or {}
    ours = mc.get("model_type") == "mamba_swelu"
    what = (
        f"A Mamba-SWELU language model (preset `{record.get('preset')}`, activation "
        f"`{mc.get('activation')}`) trained with [mswelu](https://pypi.org/project/mswelu/)."
        if ours
        else f"A `{mc.get('model_type')}` baseline (`{record.get('preset')}`) trained with mswelu."
    )
    needs = (
        "Loading it needs the `mswelu` package (`pip install mswelu`): `import mswelu` registers the model "
        "type with transformers, no remote code is run."
        if ours
        else "A standard transformers model: it loads without mswelu."
    )
    load = (
        "```python\n"
        + ("import mswelu  # registers the model with transformers' Auto classes\n" if ours else "")
        + "from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline\n\n"
        'model = AutoModelForCausalLM.from_pretrained("final")\n'
        'tokenizer = AutoTokenizer.from_pretrained("final")\n'
        'generate = pipeline("text-generation", model="final")\n'
        'print(generate("ROMEO:", max_new_tokens=40)[0]["generated_text"])\n```'
    )
    arch = _table(
        [
            ("model type", f"`{mc.get('model_type')}`"),
            ("parameters", f"{record.get('_parameters'):,}" if record.get("_parameters") else None),
            ("layers", f"`{mc['layer_pattern']}`" if mc.get("layer_pattern") else mc.get("n_layer")),
            ("d_model", mc.get("d_model") or mc.get("n_embd") or mc.get("hidden_size")),
            ("d_state", mc.get("d_state")),
            ("mixer", mc.get("mixer")),
            ("activation", mc.get("activation")),
            ("vocabulary", mc.get("vocab_size")),
            (
                "context (learned positions)" if mc.get("pos_embedding") == "learned" else "context",
                record.get("seq_len"),
            ),
        ]
    )
    data = _table(
        [
            ("dataset", f"`{record.get('data')}`"),
            ("source", meta.get("source")),
            ("tokenizer", f"`{Path(tokenizer).name if tokenizer.endswith('.json') else tokenizer}`"),
            ("training split", f"{splits['train']['tokens']:,} tokens" if "train" in splits else None),
            ("validation split", f"{splits['val']['tokens']:,} tokens" if "val" in splits else None),
            ("data fingerprint", record.get("_data_fingerprint")),
        ]
    )
    train = _table(
        [
            ("steps", figures.get("steps")),
            ("tokens", f"{figures['tokens']:,}" if figures.get("tokens") is not None else None),
            ("batch x seq_len", f"{record.get('batch_size')} x {record.get('seq_len')}"),
            (
                "optimizer",
                f"{record.get('optimizer')}, lr {record.get('lr')}, {record.get('schedule')} schedule",
            ),
            ("seed", record.get("seed")),
            ("processes", record.get("_world_size")),
            ("device", record.get("_device")),
        ]
    )
    results = _table(
        [
            ("validation bits per byte", _num(figures.get("val_bpb"), ".4f")),
            ("validation loss (nats/token)", _num(figures.get("val_loss"), ".4f")),
            ("validation perplexity", _num(figures.get("val_ppl"), ".2f")),
            ("validation tokens scored", figures.get("val_tokens")),
        ]
    )
    front = {
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["mswelu", *(["mamba", "state-space-model", "learnable-activation"] if ours else [])],
    }
    config_yaml = yaml.safe_dump(train_cfg, sort_keys=False)
    return (
        f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n\n# {name}\n\n{what}\n\n"
        f"{needs}\n\n{load}\n\n## Architecture\n\n{arch}\n\n## Data\n\n{data}\n\n## Training\n\n{train}\n\n"
        f"## Results\n\n{results}\n\n## Activation shape parameters, per slot\n\n"
        f"{_shape_table(record, figures.get('shape') or {})}\n\n"
        f"## How it was made\n\n```bash\n{launch_command()}\n```\n\n"
        f"<details><summary>the training config</summary>\n\n```yaml\n{config_yaml}```\n\n</details>\n"
    )


def _portable_tokenizer_class(path: Path) -> None:
    """Rename transformers 5's ``TokenizersBackend`` to ``PreTrainedTokenizerFast`` for older releases."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


_SAID: set[str] = set()


def _say_once(notice: str) -> None:
    """:func:`log` a notice the first time this process meets it (a study of synthetic tasks saves hundreds
    of ``final/`` folders without a tokenizer, each for the same reason)."""
    if notice not in _SAID:
        _SAID.add(notice)
        log(notice)


def write_final_files(
    folder: Path,
    model: Any,
    data: Path,
    meta: Mapping[str, Any],
    record: Mapping[str, Any],
    figures: Mapping[str, Any],
    seq_len: int,
) -> None:
    """Write the tokenizer ``data`` were prepared with, ``generation_config.json`` and ``README.md`` into a
    run's ``final/``. A tokenizer that cannot be built offline is left out with a notice (the model still
    loads)."""
    from transformers import GenerationConfig

    from mswelu.data import tokenizer_name
    from mswelu.models.build import max_context, shape_values

    context = max_context(model) or seq_len
    figures = {**figures, "shape": shape_values(model), "context": context}
    tokenizer = tokenizer_name(data, meta)
    eos = getattr(model.config, "eos_token_id", None)
    try:
        hf_tokenizer(tokenizer, model_max_length=context).save_pretrained(str(folder))
    except ValueError as exc:
        _say_once(f"final/ has no tokenizer: {exc}")
    else:
        _portable_tokenizer_class(folder / "tokenizer_config.json")
    gen = GenerationConfig(
        eos_token_id=eos,
        pad_token_id=eos,
        bos_token_id=getattr(model.config, "bos_token_id", None),
        do_sample=True,
        temperature=0.8,
        top_k=50,
        top_p=0.95,
        max_new_tokens=100,
    )
    gen.save_pretrained(str(folder))
    (folder / MODEL_CARD).write_text(model_card(record, figures, tokenizer, meta), encoding="utf-8")
