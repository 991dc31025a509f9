"""docs/codes.md holds the sources behind every default rule, and explain points there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scannerd.classify import CANDIDATE_RULE_ID, CODES_DOC, Classifier, Rule

REPO = Path(__file__).resolve().parent.parent
DOC = (REPO / CODES_DOC).read_text(encoding="utf-8")
CLF = Classifier.build()
ALL_RULES = (*CLF.rules, *CLF.disabled)
SECTIONS = re.findall(r"^### `([^`]+)`", DOC, flags=re.MULTILINE)


def section(rule_id: str) -> str:
    return DOC.split(f"### `{rule_id}`", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]


def test_every_default_rule_and_the_fallback_has_one_section() -> None:
    assert sorted(SECTIONS) == sorted({r.id for r in ALL_RULES} | {CANDIDATE_RULE_ID})


@pytest.mark.parametrize("rule", ALL_RULES, ids=[r.id for r in ALL_RULES])
def test_each_section_states_the_rules_confidence(rule: Rule) -> None:
    text = section(rule.id)
    assert f"Confidence **{rule.confidence}**" in text


@pytest.mark.parametrize("rule", CLF.rules, ids=[r.id for r in CLF.rules])
def test_explain_points_at_the_winning_rules_section(rule: Rule) -> None:
    example = rule.examples[0]
    lines = CLF.explain(example, "qr")
    assert f'  more: docs/codes.md, section "{rule.id}"' in lines


def test_explain_of_a_candidate_points_at_the_fallback_section() -> None:
    lines = CLF.explain("NH" + "A1" * 13, "qr")
    assert f'  more: docs/codes.md, section "{CANDIDATE_RULE_ID}"' in lines


def test_nothing_cites_a_file_outside_the_repository() -> None:
    # CODES.md lived beside the project, not in it: a technician could not open it.
    assert "CODES.md" not in (REPO / "scannerd/rules/default.toml").read_text(encoding="utf-8")
    assert "CODES.md" not in (REPO / "scannerd/classify.py").read_text(encoding="utf-8")
    for r in ALL_RULES:
        assert "CODES.md" not in r.source
    assert all("CODES.md" not in line for line in CLF.explain("NH" + "A1" * 13, "qr"))


def test_site_rules_are_not_sent_to_the_projects_document() -> None:
    clf = Classifier.build([{"id": "his.rx", "channel": "his", "kind": "other", "regex": r"RX\d{10}", "source": "our HIS"}])
    lines = clf.explain("RX0123456789", "code128")
    assert "  source: our HIS" in lines and not any(line.startswith("  more:") for line in lines)
