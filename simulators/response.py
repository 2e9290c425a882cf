"""How a district's staff answer alerts: delays and dispositions, drawn at random; pure, no I/O.

One model for both the staff who answer live calls through the API (simulators/staff.py)
and the month of history written when the demo first starts (simulators/history.py), so
the KPI band reads the same kind of month before and after the demo starts.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final

from devices import ALERT_KINDS

# Care-line practice asks 97.5 % of calls taken over within 60 s. An ordinary district
# misses that: most calls are taken over within a minute, some late, a few overdue (no
# one for more than 180 s, flagged red on the regulator's screen).
ACK_ON_TIME_SHARE: Final = 0.90
ACK_LATE_SHARE: Final = 0.075  # between 60 s and 180 s; the rest is overdue
# Taken over within a minute: a log-normal around 18 s, most between 8 s and 40 s.
ACK_MEDIAN_S: Final = 18.0
ACK_SIGMA: Final = 0.5
ACK_FASTEST_S: Final = 4.0
OVERDUE_LONGEST_S: Final = 600.0
# From taking a call over to being at the resident's side (walk, stairs, another call).
ATTEND_MEDIAN_S: Final = 75.0
ATTEND_SIGMA: Final = 0.6
ATTEND_LONGEST_S: Final = 15 * 60.0
# From arriving to closing the alert in the console, with a disposition.
RESOLVE_MEDIAN_S: Final = 240.0
RESOLVE_SIGMA: Final = 0.7
RESOLVE_LONGEST_S: Final = 30 * 60.0
# So every answer is over within this long of the alert being raised.
ANSWER_LONGEST_S: Final = OVERDUE_LONGEST_S + ATTEND_LONGEST_S + RESOLVE_LONGEST_S
# Share of each high alert that staff judge a false alarm on site: a resident leaning on
# the pull cord, a radar fooled by a dropped coat, a nap taken for no movement. With the
# presses cancelled at the button (below) about 40 % of calls end as false alarms, as
# care-line operators report; radar falls fare better.
FALSE_ALARM_SHARE: Final[dict[str, float]] = {
    "sos": 0.2,
    "fall": 0.22,
    "dwell": 0.35,
    "long_lie": 0.05,
}
# A press the resident cancels at the button is nearly always a mistake.
CANCELLED_FALSE_ALARM_SHARE: Final = 0.9
# Medium and low alerts (a device offline, a battery, capacity): someone looks at them
# when free, and often the condition ends (and the alert resolves by itself) before.
MEDIUM_ACK_SHARE: Final = 0.6
MEDIUM_ACK_MIN_S: Final = 45.0
MEDIUM_ACK_MAX_S: Final = 15 * 60.0

NOTES: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    ("sos", "real"): ("协助如厕", "老人胸闷，已通知家属并送医", "协助起身", "需要换药"),
    ("sos", "false_alarm"): ("误按", "老人碰到拉绳", "打扫时误触"),
    ("fall", "real"): ("老人在卫生间滑倒，已扶起，无外伤", "夜间起床跌倒，已通知医生"),
    ("fall", "false_alarm"): ("衣物掉落误报", "老人坐在地上整理物品"),
    ("dwell", "real"): ("老人身体不适，已处理",),
    ("dwell", "false_alarm"): ("老人午睡", "老人在看电视"),
    ("long_lie", "real"): ("跌倒后未能起身，已扶起并观察",),
    ("long_lie", "false_alarm"): ("已在现场处理",),
}


def duty_username(facility_id: str) -> str:
    """The account of the facility's simulated staff on duty, who answer its alerts."""
    return f"duty-{facility_id}"


@dataclass(frozen=True, slots=True)
class Response:
    """What staff do about one alert, in seconds after it was raised.

    None for a step they do not take: a medium alert may never be taken over (its
    condition ends first), and only high alerts are attended and resolved by staff.
    """

    ack_after_s: float | None
    attend_after_s: float | None
    resolve_after_s: float | None
    disposition: str | None
    note: str


def ack_delay(rng: random.Random) -> float:
    """Seconds until a high alert is taken over: mostly within 60 s, some late, a few overdue."""
    draw = rng.random()
    if draw < ACK_ON_TIME_SHARE:
        seconds = rng.lognormvariate(math.log(ACK_MEDIAN_S), ACK_SIGMA)
        return min(max(seconds, ACK_FASTEST_S), 58.0)
    if draw < ACK_ON_TIME_SHARE + ACK_LATE_SHARE:
        return rng.uniform(62.0, 175.0)
    return rng.uniform(185.0, OVERDUE_LONGEST_S)


def plan_response(kind: str, rng: random.Random, *, cancelled: bool = False) -> Response:
    """How staff answer one alert of `kind` (`cancelled`: the resident cancelled the press)."""
    alert_kind = ALERT_KINDS[kind]
    if alert_kind.priority != "high":
        if rng.random() >= MEDIUM_ACK_SHARE:
            return Response(None, None, None, None, "")
        return Response(rng.uniform(MEDIUM_ACK_MIN_S, MEDIUM_ACK_MAX_S), None, None, None, "")
    ack = ack_delay(rng)
    attend = ack + min(
        ATTEND_LONGEST_S, rng.lognormvariate(math.log(ATTEND_MEDIAN_S), ATTEND_SIGMA)
    )
    resolve = attend + min(
        RESOLVE_LONGEST_S, rng.lognormvariate(math.log(RESOLVE_MEDIAN_S), RESOLVE_SIGMA)
    )
    share = CANCELLED_FALSE_ALARM_SHARE if cancelled else FALSE_ALARM_SHARE.get(kind, 0.1)
    disposition = "false_alarm" if rng.random() < share else "real"
    notes = NOTES.get((kind, disposition), ("",))
    return Response(ack, attend, resolve, disposition, rng.choice(notes))
