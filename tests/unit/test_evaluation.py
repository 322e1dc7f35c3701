"""Metrics: hand-computed tiny cases, and scikit-learn as the oracle on random ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from models import evaluation


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),
        ([0, 1], [0.2, 0.9], 1.0),
        ([0, 1], [0.9, 0.2], 0.0),
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),
        # a tie between a fraud and a genuine row counts one half: (1 + 1 + 0.5 + 1) / 4
        ([0, 0, 1, 1], [0.1, 0.6, 0.6, 0.9], 0.875),
    ],
)
def test_auc_roc_hand_cases(labels: list[int], scores: list[float], expected: float) -> None:
    # given labels and scores whose AUC is worked out by hand (pairs ranked right / pairs)
    # when
    auc = evaluation.auc_roc(np.array(labels), np.array(scores))
    # then
    assert auc == pytest.approx(expected)


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        # thresholds .9 (P=1, R=.5), .8 (P=.5, R=.5), .7 (P=2/3, R=1): .5*1 + .5*2/3
        ([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1], 0.5 + 1 / 3),
        ([1, 0, 0], [0.9, 0.5, 0.1], 1.0),
        # tied scores enter together: one threshold with P=.5, R=1
        ([1, 0], [0.5, 0.5], 0.5),
        ([0, 0, 1], [0.9, 0.5, 0.1], 1 / 3),
    ],
)
def test_average_precision_hand_cases(
    labels: list[int], scores: list[float], expected: float
) -> None:
    # given
    # when
    ap = evaluation.average_precision(np.array(labels), np.array(scores))
    # then
    assert ap == pytest.approx(expected)


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 6)), min_size=2, max_size=40).filter(
        lambda rows: len({y for y, _ in rows}) == 2
    )
)
def test_ranking_metrics_match_sklearn(data: list[tuple[int, int]]) -> None:
    # given labels with both classes and coarse scores (many ties)
    labels = np.array([y for y, _ in data])
    scores = np.array([s / 6 for _, s in data])
    # when / then
    assert evaluation.auc_roc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert evaluation.average_precision(labels, scores) == pytest.approx(
        average_precision_score(labels, scores)
    )


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1]])
def test_auc_roc_refuses_a_single_class(labels: list[int]) -> None:
    # given a set with one class only
    # when / then
    with pytest.raises(ValueError, match="both classes"):
        evaluation.auc_roc(np.array(labels), np.linspace(0, 1, len(labels)))


def _day(n: int) -> np.datetime64:
    return np.datetime64("2018-08-08") + np.timedelta64(n, "D")


def test_card_precision_per_card_max_and_detected_cards_leave_later_days() -> None:
    # given two days, k = 2
    # day 0: card 1 fraud .9; card 2 genuine .15; card 3 fraud .1 and genuine .2
    #   -> card scores 1:.9, 3:.2, 2:.15 (max per card), both top cards compromised: 2/2
    #   (ranking transactions instead of cards would alert on 1 and 3's genuine row: 1/2)
    # day 1: cards 1 and 3 were detected on day 0, so their frauds (.95, .9) are gone;
    #   left: card 2 genuine .5, card 4 fraud .4, card 5 genuine .3 -> top 2, 4: 1/2
    #   (without the removal the top two would be 1 and 3: 2/2)
    rows = [
        (0, 1, 1, 0.9),
        (0, 2, 0, 0.15),
        (0, 3, 1, 0.1),
        (0, 3, 0, 0.2),
        (1, 1, 1, 0.95),
        (1, 3, 1, 0.9),
        (1, 2, 0, 0.5),
        (1, 4, 1, 0.4),
        (1, 5, 0, 0.3),
    ]
    days = np.array([_day(d) for d, *_ in rows])
    cards, labels, scores = (np.array([r[i] for r in rows]) for i in (1, 2, 3))
    # when
    cp = evaluation.card_precision_at_k(days, cards, labels, scores, k=2)
    # then
    assert cp.per_day == [1.0, 0.5]
    assert cp.mean == pytest.approx(0.75)
    assert cp.compromised_cards == [2, 1]
    assert cp.days == [_day(0), _day(1)]


def test_card_precision_keeps_compromised_cards_that_were_not_alerted() -> None:
    # given day 0: card 9 compromised but ranked below k = 1 (card 8, genuine, is on top)
    # and day 1: card 9's fraud ranks first
    days = np.array([_day(0), _day(0), _day(1)])
    cards = np.array([8, 9, 9])
    labels = np.array([0, 1, 1])
    scores = np.array([0.9, 0.1, 0.7])
    # when
    cp = evaluation.card_precision_at_k(days, cards, labels, scores, k=1)
    # then card 9 was never detected, so it still counts on day 1
    assert cp.per_day == [0.0, 1.0]


def test_card_precision_divides_by_k_even_with_fewer_cards_and_breaks_ties_by_card_id() -> None:
    # given one day: cards 7 (genuine) and 6 (fraud) tie at .5
    days = np.array([_day(0), _day(0)])
    cards, labels, scores = np.array([7, 6]), np.array([0, 1]), np.array([0.5, 0.5])
    # when
    top1 = evaluation.card_precision_at_k(days, cards, labels, scores, k=1)
    top100 = evaluation.card_precision_at_k(days, cards, labels, scores, k=100)
    # then card 6 (lower id) wins the tie; with k=100 one hit over 100 alerts
    assert top1.mean == 1.0
    assert top100.mean == pytest.approx(0.01)


def test_evaluate_reports_the_three_metrics() -> None:
    # given a perfect ranking over one day, 3 compromised cards
    days = np.array([_day(0)] * 6)
    cards = np.arange(6)
    labels = np.array([1, 1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    # when
    metrics = evaluation.evaluate(labels, scores, days, cards)
    # then
    assert metrics.auc_roc == 1.0 and metrics.average_precision == 1.0
    assert metrics.card_precision_at_100 == pytest.approx(0.03)


def test_metrics_refuse_misaligned_or_non_binary_input() -> None:
    # given / when / then
    with pytest.raises(ValueError, match="one length"):
        evaluation.auc_roc(np.array([0, 1]), np.array([0.5]))
    with pytest.raises(ValueError, match="0 or 1"):
        evaluation.average_precision(np.array([0, 2]), np.array([0.1, 0.5]))
    with pytest.raises(ValueError, match="finite"):
        evaluation.auc_roc(np.array([0, 1]), np.array([0.1, np.nan]))
