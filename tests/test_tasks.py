"""The synthetic tasks (mswelu.data.tasks): each generator against its definition on small cases, determinism
from the seed, the splits the papers hold apart, the source string, and the batches the trainer reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mswelu.data.tasks import (
    IGNORE,
    TASKS,
    TaskLoader,
    TaskSource,
    composite,
    induction_heads,
    inverse_matching,
    mqar,
    selective_copying,
    task_spec,
)
from mswelu.ops.lm_loss import split_window

ALL_LEVELS = [(name, level) for name, task in TASKS.items() for level in task.levels]


def examples(name: str, split: str = "train", count: int = 200, **knobs):
    task = task_spec(name)
    k = task.resolve(**knobs)
    return k, [task.sample(k, np.random.default_rng([7, i]), split) for i in range(count)]


def test_every_task_is_registered_with_three_levels():
    assert set(TASKS) >= {"mqar", "selective_copying", "induction_heads", "inverse_matching", "composite"}
    for task in TASKS.values():
        assert len(task.levels) >= 3


@pytest.mark.parametrize(("name", "level"), ALL_LEVELS)
def test_examples_fit_their_layout(name, level):
    source = TaskSource(f"task:{name}?level={level}&test=8")
    for split in ("train", "test"):
        for i in range(8):
            ex = source.task.sample(source.knobs, np.random.default_rng([3, i]), split)
            assert ex.tokens.shape == (source.seq_len + 1,) and ex.tokens.dtype == np.int64
            assert 0 <= ex.tokens.min() and ex.tokens.max() < source.vocab_size
            assert len(ex.answers) >= 1 and ex.answers.max() < source.seq_len


def test_mqar_answers_are_the_values_bound_to_the_queried_keys():
    k, exs = examples("mqar", pairs=3, keys=5, values=4, seq_len=15)
    for ex in exs:
        t, n = ex.tokens, 3
        keys, values = t[0 : 2 * n : 2], t[1 : 2 * n : 2]
        assert len(set(keys.tolist())) == n and keys.max() <= 5 and values.min() > 5  # keys and values apart
        bound = dict(zip(keys.tolist(), values.tolist(), strict=True))
        assert sorted(t[ex.answers].tolist()) == sorted(keys.tolist())  # each key queried once
        for pos in ex.answers:
            assert pos >= 2 * n and t[pos + 1] == bound[int(t[pos])]
        others = np.setdiff1d(np.arange(2 * n, len(t)), np.concatenate([ex.answers, ex.answers + 1]))
        assert (t[others] == mqar.FILLER).all()


def test_selective_copying_targets_are_the_marked_tokens_in_order():
    k, exs = examples("selective_copying", tokens=3, vocab=4, context=7)
    for ex in exs:
        t = ex.tokens
        region = t[:7]
        data = region[region != selective_copying.NOISE]
        assert len(data) == 3 and t[7] == selective_copying.SEPARATOR
        np.testing.assert_array_equal(ex.answers, [7, 8, 9])
        np.testing.assert_array_equal(t[ex.answers + 1], data)  # the targets: the data tokens, in order


def test_induction_targets_follow_the_earlier_occurrence():
    k, exs = examples("induction_heads", vocab=4, seq_len=10)
    for ex in exs:
        t = ex.tokens
        triggers = np.flatnonzero(t == induction_heads.TRIGGER)
        assert len(triggers) == 2 and triggers[1] == len(t) - 2
        np.testing.assert_array_equal(ex.answers, [len(t) - 2])
        assert t[-1] == t[triggers[0] + 1]


@pytest.mark.parametrize("negatives", ["random", "near"])
def test_inverse_matching_labels_are_true_exactly_when_one_half_is_the_other_reversed(negatives):
    k, exs = examples("inverse_matching", count=400, length=3, vocab=3, negatives=negatives)
    labels = []
    for ex in exs:
        t = ex.tokens
        a, b = t[:3], t[4:7]
        assert t[3] == inverse_matching.SEPARATOR and t[7] == inverse_matching.QUERY
        np.testing.assert_array_equal(ex.answers, [7])
        reversed_ = np.array_equal(b, a[::-1])
        assert t[8] == (inverse_matching.TRUE if reversed_ else inverse_matching.FALSE)
        labels.append(reversed_)
    assert 0.4 < np.mean(labels) < 0.75  # half positives, and random negatives that happen to match
    if negatives == "near":  # a near miss differs from the reverse in exactly `changes` places
        for ex in exs:
            a, b = ex.tokens[:3], ex.tokens[4:7]
            assert (a[::-1] != b).sum() in (0, 1)


def test_inverse_matching_test_sequences_never_occur_in_training():
    _, train = examples("inverse_matching", "train", 300, length=3, vocab=4)
    _, test = examples("inverse_matching", "test", 300, length=3, vocab=4)
    firsts = lambda exs: {tuple(ex.tokens[:3].tolist()) for ex in exs}  # noqa: E731
    assert firsts(train) and firsts(test) and not firsts(train) & firsts(test)
    everything = {(a, b, c) for a in range(4) for b in range(4) for c in range(4)}
    held = {s for s in everything if inverse_matching.in_test_split(np.array(s))}
    assert 0.1 < len(held) / len(everything) < 0.35  # about one in five


def test_composite_outputs_are_f2_of_f1_under_the_function_tables():
    k, exs = examples("composite", "train", 400, keys=7, anchors=3, context=5, asymmetry=2)
    shifts = composite.shift_table(k)
    assert len(set(shifts.tolist())) == 3 and (shifts >= 1).all() and (shifts < 7).all()
    f = {a: (lambda x, a=a: (x + shifts[a - 1]) % 7) for a in (1, 2, 3)}
    first, seen = composite.first_key(k), set()
    for ex in exs:
        t = ex.tokens
        where = np.flatnonzero((t[:5] >= 1) & (t[:5] <= 3))
        assert len(where) == 2 and where[1] == where[0] + 1  # two adjacent anchors, the key just before
        x, a1, a2 = int(t[where[0] - 1]) - first, int(t[where[0]]), int(t[where[1]])
        assert t[5] == composite.SEPARATOR and ex.answers.tolist() == [5]
        y = int(t[6]) - first
        expected = f[a2](f[a1](x)) if (a2, a1) != (2, 3) else (f[a2](f[a1](x)) + 2) % 7
        assert y == expected
        seen.add((a1, a2))
    assert (2, 3) not in seen and (3, 2) in seen and len(seen) == 8  # every pair but the held-out one


def test_composite_test_split_is_the_unseen_pair_scored_by_composition():
    k, exs = examples("composite", "test", 50, keys=7, anchors=3, context=5)
    shifts = composite.shift_table(k)
    for ex in exs:
        t = ex.tokens
        i = int(np.flatnonzero(t[:5] == 2)[0])
        assert t[i + 1] == 3
        x = int(t[i - 1]) - composite.first_key(k)
        assert int(t[6]) - composite.first_key(k) == (x + shifts[1] + shifts[2]) % 7


@pytest.mark.parametrize("name", sorted(TASKS))
def test_batches_are_a_function_of_seed_step_and_row(name):
    source = TaskSource(f"task:{name}?level={next(iter(TASKS[name].levels))}")
    a = source.train_batch(seed=1, step=5, rows=range(0, 6))
    np.testing.assert_array_equal(a, source.train_batch(seed=1, step=5, rows=range(0, 6)))
    np.testing.assert_array_equal(a[2:4], source.train_batch(seed=1, step=5, rows=range(2, 4)))
    assert not torch.equal(a, source.train_batch(seed=2, step=5, rows=range(0, 6)))
    assert not torch.equal(a, source.train_batch(seed=1, step=6, rows=range(0, 6)))
    test = torch.cat(list(source.test_batches(4, sample=8)))
    np.testing.assert_array_equal(test, torch.cat(list(source.test_batches(3, sample=8))))
    tune = TaskSource(f"{source.text}&eval=tune")
    assert tune.fingerprint != source.fingerprint
    assert not torch.equal(torch.cat(list(tune.test_batches(4, sample=8))), test)


def test_batches_are_inputs_and_targets_ignored_off_the_answers():
    source = TaskSource("task:mqar?level=easy")
    batch = source.train_batch(0, 0, range(3))
    assert batch.shape == (3, 2, source.seq_len)
    x, y = split_window(batch)
    np.testing.assert_array_equal(x[:, 1:], batch[:, 0, 1:])
    scored = y != IGNORE
    assert (scored.sum(1) == 2).all()
    np.testing.assert_array_equal(y[:, :-1][scored[:, :-1]], x[:, 1:][scored[:, :-1]])  # the next token


def test_loaders_split_one_global_batch_and_resume():
    source = TaskSource("task:selective_copying?level=easy")
    one = TaskLoader(source, batch_size=4, seed=3)
    halves = TaskLoader.for_micro_steps(source, 2, seed=3, rank=0, world_size=1, accum=2)
    np.testing.assert_array_equal(next(one), torch.cat([next(h) for h in halves]))
    state = one.state_dict()
    after = next(one)
    fresh = TaskLoader(source, batch_size=4, seed=3)
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(next(fresh), after)
    with pytest.raises(ValueError, match="seed"):
        TaskLoader(source, batch_size=4, seed=4).load_state_dict(state)


def test_source_strings():
    s = TaskSource("task:mqar?level=hard&pairs=5&test=16")
    assert s.knobs["pairs"] == 5 and s.knobs["keys"] == 32 and s.test_examples == 16
    assert s.fingerprint == TaskSource("task:mqar?test=16&pairs=5&level=hard").fingerprint
    assert s.fingerprint != TaskSource("task:mqar?level=hard&pairs=6&test=16").fingerprint
    for bad, says in [
        ("task:mqr", "did you mean 'mqar'"),
        ("task:mqar?level=hardest", "unknown level"),
        ("task:mqar?pairz=3", "did you mean 'pairs'"),
        ("task:mqar?pairs=three", "integer"),
        ("task:mqar?pairs=9&keys=4", "keys"),
        ("task:mqar?test=0", "test"),
        ("task:mqar?pairs=2&pairs=3", "twice"),
        ("task:inverse_matching?negatives=odd", "negatives"),
        ("task:mqar?eval=val", "eval"),
    ]:
        with pytest.raises(ValueError, match=says):
            TaskSource(bad)
