"""The committed studies' records stay valid through refactors: each is keyed by the current training-path
code (so a fresh clone's rerun trains nothing), a migration re-keys records only on an identical
fingerprint, and the latest recorded proof still holds on this code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mswelu.workbook import migrate
from mswelu.workbook.ledger import record_code

STUDIES = Path(__file__).resolve().parents[1] / "reports" / "studies"
LEDGERS = sorted(p.parent for p in STUDIES.glob("*/runs") if any(p.glob("*.json")))


@pytest.mark.parametrize("study", LEDGERS, ids=lambda p: p.name)
def test_every_committed_record_is_keyed_by_the_current_training_code(study: Path) -> None:
    stale = []
    for path in sorted((study / "runs").glob("*.json")):
        record = json.loads(path.read_text())
        if record["key"]["code"]["digest"] != record_code(record["key"])["digest"]:
            stale.append(path.name)
    assert not stale, (
        f"{len(stale)} records of {study.name} name training code that is gone ({stale[:3]} ...), so "
        "a rerun of the study would retrain them: if training is bit-identical, re-key them with "
        "`python -m mswelu.workbook.migrate` (its docstring says how); otherwise rerun the study"
    )


@pytest.mark.parametrize(
    "study", [p for p in LEDGERS if (p / "throughput.json").is_file()], ids=lambda p: p.name
)
def test_the_throughput_is_keyed_by_the_current_training_code(study: Path) -> None:
    saved = json.loads((study / "throughput.json").read_text())
    digests = {}
    for path in sorted((study / "runs").glob("*.json")):
        record = json.loads(path.read_text())
        digests.setdefault(record["variant"], record["key"]["code"]["digest"])
    assert {v: k["code"] for v, k in saved["keys"].items()} == {v: digests[v] for v in saved["keys"]}


@pytest.mark.slow
@pytest.mark.parametrize(
    "study", [p for p in LEDGERS if (p / "migrations.json").is_file()], ids=lambda p: p.name
)
def test_the_latest_migration_proof_holds_on_this_code(study: Path) -> None:
    """Training each variant a few steps on today's code gives the very losses and weights recorded when the
    records were last re-keyed (with the code before that change): the proof is checked, not just stored."""
    latest = json.loads((study / "migrations.json").read_text())[-1]
    if latest["machine"] != migrate.machine():
        pytest.skip(f"the proof's bits are of {latest['machine']}, this is {migrate.machine()}")
    proven = sorted({name.split("/")[0] for name in latest["fingerprint"]})
    now = migrate.study_fingerprint(study.name, proven, latest.get("settings"))  # as the proof was made
    assert now["fingerprint"] == latest["fingerprint"]
    records = [json.loads(p.read_text()) for p in sorted((study / "runs").glob("*.json"))]
    current = {migrate.record_name(r): r["key"]["code"]["digest"] for r in records}
    # records added since (a study still running) are keyed by today's code: the test above checks them
    assert latest["to"] == {name: current.get(name) for name in latest["to"]}


def _fake_study(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "studies" / "s"
    (folder / "runs").mkdir(parents=True)
    settings = {"preset": "small", "seq_len": 64, "activation": "silu", "model": {"d_state": 4}}
    for seed in (0, 1):
        record = {
            "name": f"s-mamba-s{seed}",
            "variant": "mamba",
            "seed": seed,
            "kind": "run",
            "key": {"settings": settings, "code": {"digest": "old", "files": {}}},
        }
        (folder / "runs" / f"s-mamba-s{seed}.json").write_text(json.dumps(record))
    (folder / "throughput.json").write_text(json.dumps({"keys": {"mamba": {"settings": {}, "code": "old"}}}))
    monkeypatch.setattr(migrate, "_ledger_folder", lambda study: folder)
    return folder


def _fingerprint_gives(monkeypatch, fingerprint: dict) -> None:
    """This code's fingerprint of any study, as a stand-in that trains nothing."""
    monkeypatch.setattr(
        migrate,
        "study_fingerprint",
        lambda s, settings=None: {"machine": migrate.machine(), "fingerprint": fingerprint, "settings": {}},
    )


def test_apply_refuses_a_proof_that_differs_and_changes_nothing(tmp_path: Path, monkeypatch) -> None:
    folder = _fake_study(tmp_path, monkeypatch)
    before = {p.name: p.read_bytes() for p in folder.rglob("*.json")}
    here = {"mamba/fp32": {"losses": ["0x1.0p+3"], "weights": "a"}}
    _fingerprint_gives(monkeypatch, here)
    proof = {
        "study": "s",
        "machine": migrate.machine(),
        "fingerprint": {"mamba/fp32": {"losses": ["0x1.1p+3"], "weights": "a"}},
    }
    with pytest.raises(SystemExit, match="not bit-identical for mamba/fp32"):
        migrate.apply("s", proof, "test")
    assert {p.name: p.read_bytes() for p in folder.rglob("*.json")} == before


def test_apply_rekeys_the_records_and_logs_the_proof(tmp_path: Path, monkeypatch) -> None:
    folder = _fake_study(tmp_path, monkeypatch)
    same = {"mamba/fp32": {"losses": ["0x1.0p+3"], "weights": "a"}}
    _fingerprint_gives(monkeypatch, same)
    migrate.apply("s", {"study": "s", "machine": migrate.machine(), "fingerprint": same}, "moved files")
    digest = record_code(json.loads((folder / "runs" / "s-mamba-s0.json").read_text())["key"])
    for path in (folder / "runs").glob("*.json"):
        assert json.loads(path.read_text())["key"]["code"] == digest
    assert json.loads((folder / "throughput.json").read_text())["keys"]["mamba"]["code"] == digest["digest"]
    log = json.loads((folder / "migrations.json").read_text())
    assert [e["why"] for e in log] == ["moved files"]
    assert log[0]["from"] == {"mamba": "old"} and log[0]["to"] == {"mamba": digest["digest"]}


def test_a_study_still_in_its_sweep_is_fingerprinted_from_its_sweep_points(tmp_path, monkeypatch) -> None:
    """A study whose runs have not started (only lr-sweep records) still names each variant's settings, so its
    records can be migrated; a trained run's settings win over a sweep point's."""
    runs = tmp_path / "runs"
    runs.mkdir()

    def record(name: str, variant: str, kind: str, lr: float, task: str | None = None) -> None:
        key = {"settings": {"lr": lr}, **({"task": task} if task else {})}
        (runs / f"{name}.json").write_text(json.dumps({"variant": variant, "kind": kind, "key": key}))

    record("a-tune-lr1", "mamba", "sweep", 1.0)
    record("b-tune-lr2", "mamba", "sweep", 2.0, task="task:mqar?level=medium")
    record("c-run", "gpt2", "run", 3.0)
    record("d-tune", "gpt2", "sweep", 4.0)
    monkeypatch.setattr(migrate, "_ledger_folder", lambda study: tmp_path)
    got = migrate._variant_settings("s")
    assert got == {
        "mamba": ({"lr": 1.0}, None),
        "mamba@mqar": ({"lr": 2.0}, "task:mqar?level=medium"),
        "gpt2": ({"lr": 3.0}, None),
    }


@pytest.mark.parametrize("data", ["task:mqar?level=easy&test=64", None])
def test_a_migration_keys_a_record_as_a_run_of_its_settings_would_be_keyed(data, embedded_data) -> None:
    """What a migration writes (:func:`record_code` of a record's key) is the code :func:`run_key` gives the
    run: for a synthetic task too, whose settings keep no data path (a task's own files are on its path)."""
    from mswelu.workbook.ledger import run_key

    key = run_key({"preset": "tiny", "data": data or str(embedded_data), "seq_len": 16, "max_steps": 4})
    assert record_code(key) == key["code"]
    if data:
        assert any(f.startswith("data/tasks/") for f in key["code"]["files"])


def test_a_task_study_is_rekeyed_per_variant_and_task(tmp_path: Path, monkeypatch) -> None:
    """One variant's records on two tasks name different code (each task's file is on its path), so a
    migration's map is by variant and task: one entry per variant would keep only the last task's digest."""
    folder = tmp_path / "studies" / "t" / "runs"
    folder.mkdir(parents=True)
    settings = {"preset": "tiny", "seq_len": 16, "activation": "silu", "model": {}}
    for task in ("mqar", "composite"):
        code = {"digest": "old", "files": {}}
        key = {"settings": settings, "task": f"task:{task}?level=easy", "code": code}
        record = {"name": f"t-{task}", "variant": "mamba", "seed": 0, "kind": "run", "key": key}
        (folder / f"t-{task}.json").write_text(json.dumps(record))
    monkeypatch.setattr(migrate, "_ledger_folder", lambda study: folder.parent)
    same = {"mamba@mqar/fp32": {"losses": ["0x1.0p+3"], "weights": "a"}}
    _fingerprint_gives(monkeypatch, same)
    migrate.apply("t", {"study": "t", "machine": migrate.machine(), "fingerprint": same}, "moved files")
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    to = json.loads((folder.parent / "migrations.json").read_text())[0]["to"]
    assert to == {migrate.record_name(r): r["key"]["code"]["digest"] for r in records}
    assert sorted(to) == ["mamba@composite", "mamba@mqar"] and to["mamba@mqar"] != to["mamba@composite"]


def test_a_proof_is_rechecked_with_its_own_settings_and_must_cover_every_record(
    tmp_path, monkeypatch
) -> None:
    """A study that gains records (a run after its sweep points) would pick other settings to fingerprint: a
    proof keeps the settings it used, and one that names no settings for a record's variant is refused."""
    folder = _fake_study(tmp_path, monkeypatch)
    seen = {}

    def fake(study, variants=None, settings=None):
        seen["settings"] = settings
        return {"machine": migrate.machine(), "fingerprint": {}, "settings": settings or {}}

    monkeypatch.setattr(migrate, "study_fingerprint", fake)
    base = {"study": "s", "machine": migrate.machine(), "fingerprint": {}}
    with pytest.raises(SystemExit, match="the proof names no settings for mamba"):
        migrate.apply("s", {**base, "settings": {"gpt2": {"settings": {}, "task": None}}}, "x")
    proven = {"mamba": {"settings": {"lr": 0.5}, "task": None}}
    migrate.apply("s", {**base, "settings": proven}, "x")
    assert seen["settings"] == proven
    assert json.loads((folder / "migrations.json").read_text())[-1]["settings"] == proven


def test_a_fingerprint_leaves_no_run_folder_behind(tmp_path, monkeypatch) -> None:
    """Fingerprinting a study trains once per record: each run folder (tens of MB) is removed afterwards."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    got = migrate.fingerprint({"preset": "tiny", "seq_len": 16}, "task:mqar?level=easy&test=64", "fp32")
    assert got["losses"] and len(got["weights"]) == 16
    assert not list(tmp_path.glob("mswelu-*"))  # (torch.compile keeps its own cache here)
