"""The code corpus (``--source pycode``): Python source code and its documentation, from pinned, permissively
licensed source distributions on PyPI.

Why: a second corpus of another kind than the default's verse and drama, offline, that installs on a
fresh machine the same way (pip from PyPI, each sdist pinned by name, version and SHA-256:
:mod:`mswelu.data.sdists`) and is large enough to train more than 20M tokens without repeating.

What is kept from each sdist: ``.py``/``.pyi`` source (tests and examples included), ``.rst``/``.md``
documentation, and ``.txt`` only inside a ``doc``/``docs`` folder or at the sdist's top level (elsewhere
``.txt`` files are test data). Left out: vendored and third-party folders, build output and translations
(:data:`SKIP_FOLDERS`, ``*.egg-info``), files over :data:`MAX_FILE_BYTES`, minified or data-like files (a line
over :data:`MAX_LINE_CHARS` characters), generated files (a "generated"/"do not edit" marker in their first
lines), files that are not UTF-8 text, and blank files. Identical files (after ``\\r\\n`` -> ``\\n``) are kept
once, under the smallest key.

A document is one file; its key is ``<package>/<path inside the sdist>`` without the version (say
``sympy/sympy/core/basic.py``). The split hashes the key alone (``Source.finite`` False: a document is in
validation when its seeded hash is below ``val_fraction``), so adding a package or bumping a version moves
no other package's files between splits. Documents come in the order of a fixed hash of their keys, so any
prefix (what a corpus BPE trains on) mixes every package.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from functools import lru_cache
from pathlib import Path, PurePosixPath

from mswelu.data.sdists import Sdist, fetch_sdist

PYCODE_NAMES = ("pycode", "python-code")
PYCODE_SDISTS: tuple[Sdist, ...] = (
    Sdist(
        "Django",
        "5.1.4",
        "Django-5.1.4.tar.gz",
        "de450c09e91879fa5a307f696e57c851955c910a438a35e6b4c895e86bedc82a",
        "BSD-3-Clause",
    ),
    Sdist(
        "networkx",
        "3.4.2",
        "networkx-3.4.2.tar.gz",
        "307c3669428c5362aab27c8a1260aa8f47c4e91d3891f48be0141738d8d053e1",
        "BSD-3-Clause",
    ),
    Sdist(
        "sphinx",
        "8.1.3",
        "sphinx-8.1.3.tar.gz",
        "43c1911eecb0d3e161ad78611bc905d1ad0e523e4ddc202a58a821773dc4c927",
        "BSD-2-Clause",
    ),
    Sdist(
        "SQLAlchemy",
        "2.0.36",
        "sqlalchemy-2.0.36.tar.gz",
        "7f2767680b6d2398aea7082e45a774b2b0767b5c8d8ffb9c8b683088ea9b29c5",
        "MIT",
    ),
    Sdist(
        "sympy",
        "1.13.3",
        "sympy-1.13.3.tar.gz",
        "b27fd2c6530e0ab39e275fc9b683895367e51d5da91baa8d3d64db2565fec4d9",
        "BSD-3-Clause",
    ),
    Sdist(
        "Twisted",
        "24.11.0",
        "twisted-24.11.0.tar.gz",
        "695d0556d5ec579dcc464d2856b634880ed1319f45b10d19043f2b57eb0115b5",
        "MIT",
    ),
)
FILTER_VERSION = 1  # bump when the rules below change what a document is
CODE_SUFFIXES = frozenset({".py", ".pyi", ".rst", ".md"})
DOC_FOLDERS = frozenset({"doc", "docs"})
SKIP_FOLDERS = frozenset(
    {
        "_vendor",
        "vendor",
        "vendored",
        "_vendored",
        "third_party",
        "thirdparty",
        "extern",
        "externals",
        "node_modules",
        "locale",
        "__pycache__",
        "_build",
    }
)
MAX_FILE_BYTES = 512_000
MAX_LINE_CHARS = 1000
_GENERATED = re.compile(r"auto-?generated|generated (by|from|with)|do not edit|don't edit", re.I)


def pycode_description(sdists: tuple[Sdist, ...] | None = None) -> str:
    """The corpus' packages, pins and licences, in one line (a dataset's ``source_description``)."""
    sdists = PYCODE_SDISTS if sdists is None else sdists
    pins = ", ".join(f"{s.requirement} ({s.licence})" for s in sdists)
    return f"Python source code and documentation from the PyPI sdists {pins}"


def pycode_fingerprint() -> dict:
    """What decides the corpus' content: every pin's hash and the filter rules' version."""
    return {
        "kind": "pycode",
        "sdists": [[s.name, s.version, s.sha256] for s in PYCODE_SDISTS],
        "filter": FILTER_VERSION,
    }


def keep_path(path: str) -> bool:
    """Whether a file at ``path`` (inside the sdist, its top folder removed) may be a document, by name."""
    p = PurePosixPath(path)
    folders = p.parts[:-1]
    if any(f in SKIP_FOLDERS or f.endswith(".egg-info") for f in folders):
        return False
    suffix = p.suffix.lower()
    if suffix == ".txt":
        return not folders or any(f in DOC_FOLDERS for f in folders)
    return suffix in CODE_SUFFIXES


def clean_text(raw: bytes) -> str | None:
    """The file's text, or None when it is not a document (binary, not UTF-8, minified or data-like,
    generated, blank)."""
    if len(raw) > MAX_FILE_BYTES or b"\x00" in raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if not text.strip() or max(len(line) for line in lines) > MAX_LINE_CHARS:
        return None
    if _GENERATED.search("\n".join(lines[:10])):
        return None
    return text


def sdist_files(path: Path, sdist: Sdist) -> list[tuple[str, str]]:
    """``[(key, text)]`` of every document one sdist holds (keys ``<package>/<path>``)."""
    package = sdist.name.lower()
    out = []
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            inner = member.name.partition("/")[2]
            if not member.isfile() or not inner or not keep_path(inner):
                continue
            text = clean_text(tar.extractfile(member).read())  # type: ignore[union-attr]
            if text is not None:
                out.append((f"{package}/{inner}", text))
    return out


def pycode_documents() -> list[tuple[str, str]]:
    """``[(key, text)]`` of the whole corpus: every pinned sdist fetched (SHA-256 checked) and filtered,
    identical files once (under the smallest key), in the order of a fixed hash of their keys."""
    return list(_pycode_documents(PYCODE_SDISTS))


@lru_cache(maxsize=1)
def _pycode_documents(sdists: tuple[Sdist, ...]) -> tuple[tuple[str, str], ...]:
    by_text: dict[str, tuple[str, str]] = {}
    for sdist in sdists:
        for key, text in sdist_files(fetch_sdist(sdist), sdist):
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            if digest not in by_text or key < by_text[digest][0]:
                by_text[digest] = (key, text)
    docs = list(by_text.values())
    if not docs:
        raise ValueError(f"the code corpus holds no documents ({pycode_description(sdists)})")
    return tuple(sorted(docs, key=lambda d: hashlib.sha256(d[0].encode("utf-8")).digest()))
