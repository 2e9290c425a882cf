"""The monthly report's words and its worst-first order, without a database."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from hub.models import DISPOSITIONS, SELF_RESOLVED
from hub.reports.labels import _WORDS, ALERT_KINDS, LANGUAGES, coded, word
from hub.reports.monthly import rank_key
from hub.storage.kpis import Percentiles
from hub.storage.reports import FacilityFigures

I18N = Path(__file__).resolve().parents[2] / "dashboards" / "src" / "common" / "i18n.ts"


def test_every_word_has_both_languages_and_its_placeholders() -> None:
    """Each entry has 简体中文 and English, naming the same {placeholders}."""
    for key, (zh, en) in _WORDS.items():
        assert zh.strip() and en.strip(), key
        assert set(re.findall(r"{(\w+)}", zh)) == set(re.findall(r"{(\w+)}", en)), key
    assert word("zh", "audit.all_ok", n=3) == "全部 3 个机构的审计链完整。"
    assert word("en", "page", page=2) == "Page 2"


def test_kinds_and_dispositions_read_as_on_the_screen() -> None:
    """The report names alert kinds and dispositions as the dashboards do (i18n.ts)."""
    screen = I18N.read_text(encoding="utf-8")
    zh_part, en_part = screen.split("const en", 1)
    for prefix, codes in (("kind", ALERT_KINDS), ("disp", (*DISPOSITIONS, SELF_RESOLVED))):
        for code in codes:
            for part, lang in ((zh_part, "zh"), (en_part, "en")):
                assert f'"{prefix}.{code}": "{coded(lang, prefix, code)}"' in part, (code, lang)
    assert coded("zh", "kind", "teleport") == "teleport"  # an unknown code shows as itself
    assert coded("en", "disp", None) == "—"
    assert LANGUAGES == ("zh", "en")


def _facility(ident: str, **figures: object) -> FacilityFigures:
    base = FacilityFigures(
        id=ident, name=ident, kind="elderly", capacity=10, alerts=0, calls=0, high_alerts=0,
        ack_within_60s=0, ack_within_180s=0, ack_within_60s_share=None,
        ack_within_180s_share=None, time_to_ack=Percentiles(None, None),
        time_to_attend=Percentiles(None, None), overdue_calls=0, staff_ratio_breaches=0,
        judged=0, false_alarms=0, false_alarm_share=None, devices_total=3, devices_online=3,
        buttons_untested=0, occupancy_peak=None, occupancy_mean=None,
    )  # fmt: skip
    return replace(base, **figures)  # type: ignore[arg-type]


def test_worst_first() -> None:
    """A broken chain, then overdue calls, then a low 60 s share, breaches, false alarms,
    devices offline; a quiet facility (nothing to answer) is best."""
    facilities = [
        _facility("quiet"),
        _facility("offline", devices_online=1),
        _facility("false", false_alarm_share=0.6),
        _facility("ratio", staff_ratio_breaches=4, false_alarm_share=0.9),
        _facility("slow", ack_within_60s_share=0.5),
        _facility("late", overdue_calls=2, ack_within_60s_share=0.99),
        _facility("later", overdue_calls=5, ack_within_60s_share=1.0),
        _facility("tampered"),
    ]
    broken = frozenset({"tampered"})
    ranked = [f.id for f in sorted(facilities, key=lambda f: rank_key(f, broken))]
    assert ranked == ["tampered", "later", "late", "slow", "ratio", "false", "offline", "quiet"]
