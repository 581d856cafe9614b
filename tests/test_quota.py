"""The per-credential allocation counts (relay/quota.py): the shared table a node's workers
count in, against a plain model, and through two worker processes' views of one file."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from relay.quota import LocalQuota, SharedQuota, table_slots


def test_two_workers_share_one_limit(tmp_path: Path) -> None:
    path = tmp_path / "quota"
    w0 = SharedQuota(path, 0, create=True, slots=16, workers=2)
    w1 = SharedQuota(path, 1)
    assert w0.take("alice", 1, 2) and w1.take("alice", 1, 2)
    assert not w0.take("alice", 1, 2) and not w1.take("alice", 1, 2)  # node-wide, not per worker
    assert w1.take("bob", 2, 2) and not w0.take("bob", 1, 2)
    assert w0.count("alice") == w1.count("alice") == 2
    w1.give("alice", 1)
    assert w0.take("alice", 1, 2)
    assert w0.take("carol", 5, 0)  # 0: no limit
    # worker 1 restarts: its counts die with its allocations, worker 0's stay
    w1.close()
    w1 = SharedQuota(path, 1)
    w1.reset()
    assert w0.count("alice") == 2 and w0.count("bob") == 0 and w0.count("carol") == 5
    assert w1.take("bob", 2, 2)
    w0.close()
    w1.close()


def test_shared_table_matches_a_model_under_churn(tmp_path: Path) -> None:
    # many keys taken and given back in a small table (collisions, runs wrapping around,
    # backward-shift deletions, resets): every count always matches a plain model
    rng = random.Random(14)
    workers = [SharedQuota(tmp_path / "q", 0, create=True, slots=64, workers=3)]
    workers += [SharedQuota(tmp_path / "q", i) for i in (1, 2)]
    model = [Counter[str]() for _ in workers]
    keys = [f"k{i}" for i in range(40)]
    for step in range(4000):
        w = rng.randrange(3)
        key = rng.choice(keys)
        if rng.random() < 0.55:
            limit = rng.choice([0, 3, 6])
            total = sum(m[key] for m in model)
            ok = workers[w].take(key, 1, limit)
            assert ok == (limit == 0 or total + 1 <= limit), step
            if ok:
                model[w][key] += 1
        elif model[w][key]:
            workers[w].give(key, 1)
            model[w][key] -= 1
        if step % 500 == 499:
            workers[w].reset()
            model[w].clear()
        if step % 50 == 0:
            for k in keys:
                assert workers[0].count(k) == sum(m[k] for m in model), (step, k)
    for q in workers:
        q.close()


def test_local_quota_and_table_size() -> None:
    q = LocalQuota()
    assert q.take("a", 2, 2) and not q.take("a", 1, 2)
    q.give("a", 2)
    assert q.count("a") == 0 and q.take("a", 1, 1)
    assert table_slots(10) == 1024 and table_slots(10000) == 32768
