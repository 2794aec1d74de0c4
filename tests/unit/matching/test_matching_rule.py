"""The rule as a table of clauses (`matching.rule`): the same verdicts as before it was one,
its generated document up to date, and its words for sellers."""

from __future__ import annotations

import json

import pytest

from shotstamp_service.matching import rule
from shotstamp_service.matching.engine import Candidate, Match, decide
from shotstamp_service.matching.verification import Evidence
from tests.kit import ROOT
from tests.kit.decisions import FIXTURE, synthetic_cases


def _decide(candidate: dict, evidence: dict) -> Match | None:
    pair = candidate["pdq_pair"]
    c = Candidate(**dict(candidate, pdq_pair=tuple(pair) if pair else None))
    return decide(c, Evidence(**evidence))


def _letter(match: Match | None) -> str:
    return "-" if match is None else match.verdict[0]


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(FIXTURE.read_text())


def test_real_evidence_gets_the_recorded_verdicts(recorded: dict) -> None:
    cases = recorded["real"]
    assert len(cases) > 2000 and {v for _, _, v in cases} >= {"c", "-"}
    wrong = [(c, e, v) for c, e, v in cases if _letter(_decide(c, e)) != v]
    assert not wrong, f"{len(wrong)} verdicts changed, first: {wrong[0]}"


def test_synthetic_evidence_around_every_threshold_gets_the_recorded_verdicts(
        recorded: dict) -> None:
    expected = recorded["synthetic"]
    cases = synthetic_cases()
    assert len(expected) == len(cases) and set(expected) == {"c", "s", "-"}
    got = "".join(_letter(_decide(c, e)) for c, e in cases)
    wrong = [i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b]
    assert not wrong, f"{len(wrong)} verdicts changed, first: {cases[wrong[0]]} " \
                      f"{expected[wrong[0]]} -> {got[wrong[0]]}"


def test_every_stage2_clause_decides_some_recorded_case() -> None:
    used = {m.clause for c, e in synthetic_cases() if (m := _decide(c, e)) is not None}
    assert used == {c.name for c in rule.STAGE2}


def test_the_generated_document_is_up_to_date() -> None:
    path = ROOT / "docs" / "matching-rule.md"
    assert path.read_text() == rule.markdown(), (
        "docs/matching-rule.md is stale: python -m shotstamp_service.matching.rule --markdown "
        "> docs/matching-rule.md")


def test_describe_serves_the_table() -> None:
    described = rule.describe_rule()
    assert [c["name"] for c in described["clauses"]] == [c.name for c in rule.CLAUSES]
    keypoints = next(c for c in described["clauses"] if c["name"] == "keypoints")
    assert keypoints["thresholds"]["INLIERS_COPY"] == rule.INLIERS_COPY
    assert "orb_inliers" in keypoints["reads"]
    assert all(t in rule.THRESHOLDS for c in rule.CLAUSES for t in c.thresholds)


def test_a_threshold_moves_the_verdict_where_the_table_says() -> None:
    """Just below AGREEMENT_COPY the same keypoints make only the `similar` clause."""
    base = {"matches": 20, "inliers": rule.INLIERS_COPY, "scale": 1.0, "rotation": 0.0,
            "agreement": 0.79, "cells": 200}
    candidate = Candidate(3)
    below = decide(candidate, Evidence(**base))
    assert below is not None and (below.verdict, below.clause) == ("similar", "similar")
    hit = decide(candidate, Evidence(**dict(base, agreement=rule.AGREEMENT_COPY)))
    assert hit is not None and hit.clause == "keypoints" and hit.stage == 2


@pytest.mark.parametrize(("clause", "distances", "pair", "words"), [
    ("pdq", {"pdq": 2}, ("pdq", "pdq"), "The same picture, re-saved or resized (2 of 256"),
    ("pdq", {"pdq": 4}, ("pdq_mirror", "pdq"), "The same picture mirrored, re-saved"),
    ("pdq", {"pdq": 4}, ("pdq", "pdq_trim"), "with a border added or removed"),
    ("keypoints", {"orb_inliers": 120, "orb_rotation": 0.3, "photo_agreement": 0.93,
                   "orb_coverage": 0.49, "orb_resize": 0.5}, None,
     "The same photo cropped to ~49 % of its area and shrunk: 120 details line up and 93 %"),
    ("keypoints", {"orb_inliers": 40, "orb_rotation": -12.2, "photo_agreement": 0.9,
                   "orb_coverage": 1.0, "orb_resize": 1.0}, None, "The same photo turned 12°"),
    ("keypoints_overlay", {"orb_inliers": 10, "orb_rematched": 31, "photo_agreement": 0.5,
                           "photo_overlay": 0.9}, None, "under a watermark or overlay: 31"),
    ("aligned_pixels", {"pdq": 20, "global_residual": 6.4}, ("pdq", "pdq"),
     "by 6 grey levels on average"),
    ("similar", {"orb_inliers": 14, "photo_agreement": 0.64}, None,
     "A similar picture, not a copy: 14 details line up and 64 %"),
])
def test_explanations_say_what_was_found(clause: str, distances: dict,
                                         pair: tuple[str, str] | None, words: str) -> None:
    assert words in rule.explain(rule.clause_named(clause), distances, pair)


def test_every_clause_has_words_for_any_match_it_can_make() -> None:
    for clause in rule.CLAUSES:
        text = rule.explain(clause, {name: 1 for name in rule.FIGURES})
        assert text and "{" not in text


def test_every_history_link_beside_a_constant_names_a_section() -> None:
    import re

    history = (ROOT / "docs" / "matching-history.md").read_text()
    anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", history, re.M)}
    service = ROOT / "service" / "shotstamp_service" / "matching"
    links = {link for name in ("rule.py", "engine.py")
             for link in re.findall(r"# history: #([\w-]+)", (service / name).read_text())}
    assert len(links) >= 15 and links <= anchors, links - anchors


def test_the_bench_helpers_read_the_table() -> None:
    assert rule.plausible(Evidence(scale=2.5, rotation=-20.0))
    assert not rule.plausible(Evidence(scale=2.51, rotation=0.0))
    assert not rule.plausible(Evidence(scale=1.0, rotation=20.01))
    small = {"global_residual": 12.0, "global_pixels": 256, "global_contrast": 34.3}
    assert rule.pixels_match(Evidence(**small))
    assert not rule.pixels_match(Evidence(**dict(small, global_contrast=34.28)))  # 0.35 × it
    assert not rule.pixels_match(Evidence(**dict(small, global_pixels=255)))
