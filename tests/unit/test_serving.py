"""Routing: the champion decides, a challenger runs in shadow or decides an A/B share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import pytest

from models.artifact import LoadedModel
from models.registry import ModelLoader
from models.serving import ModelRouter, ab_bucket


@dataclass
class Model:
    version: str


def router(share: float = 0.0) -> ModelRouter:
    loader = cast(ModelLoader, object())
    return ModelRouter(champion=loader, ab_share=share)


def test_ab_bucket_is_stable_and_uniform() -> None:
    # same customer, same bucket, on every call (hashlib, not the salted hash())
    assert ab_bucket(42) == ab_bucket(42)
    assert ab_bucket(42) == pytest.approx(ab_bucket(42, "rtml-ab"))
    buckets = [ab_bucket(c) for c in range(20_000)]
    assert all(0 <= b < 1 for b in buckets)
    assert sum(b < 0.1 for b in buckets) / len(buckets) == pytest.approx(0.1, abs=0.01)


def test_router_shadow_only_by_default() -> None:
    champion, challenger = cast(LoadedModel, Model("a")), cast(LoadedModel, Model("b"))
    deciders = {router().choose(c, champion, challenger)[0].version for c in range(500)}
    assert deciders == {"a"}


def test_router_ab_share_lets_the_challenger_decide_for_its_customers() -> None:
    champion, challenger = cast(LoadedModel, Model("a")), cast(LoadedModel, Model("b"))
    r = router(0.2)
    deciders = {c: r.choose(c, champion, challenger) for c in range(5000)}
    share = sum(d.version == "b" for d, _ in deciders.values()) / len(deciders)
    assert share == pytest.approx(0.2, abs=0.02)
    # the other model always runs in shadow, and a customer always gets the same one
    assert all(s is not None and s.version != d.version for d, s in deciders.values())
    assert all(r.choose(c, champion, challenger)[0] is deciders[c][0] for c in range(100))


def test_router_same_version_or_none_means_no_shadow() -> None:
    champion = cast(LoadedModel, Model("a"))
    assert router(0.5).choose(1, champion, None) == (champion, None)
    assert router(0.5).choose(1, champion, cast(LoadedModel, Model("a"))) == (champion, None)
    with pytest.raises(ValueError, match="ab_share"):
        router(1.5)
