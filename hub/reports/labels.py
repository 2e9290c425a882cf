"""The report's words, in 简体中文 (the default) and English: one table for PDF and XLSX."""

from __future__ import annotations

from typing import Literal

Language = Literal["zh", "en"]
LANGUAGES: tuple[Language, ...] = ("zh", "en")

# The dashboards' words for the same things (dashboards/src/common/i18n.ts), so the report
# and the screen name an alert kind alike.
_WORDS: dict[str, tuple[str, str]] = {
    "title": ("月度监管报告", "Monthly supervision report"),
    "district": ("辖区", "District"),
    "facility": ("机构", "Facility"),
    "month": ("月份", "Month"),
    "period": ("统计期间", "Period"),
    "to": ("至", "to"),
    "generated": ("生成时间", "Generated"),
    "facilities": ("机构数", "Facilities"),
    "page": ("第 {page} 页", "Page {page}"),
    "none": ("无", "None"),
    # sections: one PDF chapter and one XLSX sheet each
    "s.summary": ("概要", "Summary"),
    "s.ranking": ("机构排名", "Facilities ranked"),
    "s.daily": ("呼叫与告警", "Calls and alerts"),
    "s.response": ("响应时效", "Response times"),
    "s.overdue": ("超时呼叫", "Overdue calls"),
    "s.false_alarms": ("误报", "False alarms"),
    "s.devices": ("设备", "Devices"),
    "s.occupancy": ("在院人数", "People present"),
    "s.staff_ratio": ("师幼比", "Staff ratio"),
    "s.audit": ("审计链", "Audit chain"),
    # figures
    "alerts": ("告警", "Alerts"),
    "calls": ("紧急呼叫", "Calls"),
    "high_alerts": ("高优先级告警", "High-priority alerts"),
    "ack60": ("60 秒内接管率", "Acknowledged within 60 s"),
    "ack180": ("180 秒内接管率", "Acknowledged within 180 s"),
    "target": ("目标", "Target"),
    "met": ("达标", "met"),
    "missed": ("未达标", "missed"),
    "ack_median": ("接管用时中位数 (秒)", "Time to acknowledge, median (s)"),
    "ack_p90": ("接管用时 P90 (秒)", "Time to acknowledge, p90 (s)"),
    "attend_median": ("到场用时中位数 (秒)", "Time to attend, median (s)"),
    "attend_p90": ("到场用时 P90 (秒)", "Time to attend, p90 (s)"),
    "overdue_calls": ("超时呼叫", "Overdue calls"),
    "staff_ratio_breaches": ("师幼比超标", "Staff-ratio breaches"),
    "judged": ("已研判", "Judged by staff"),
    "false_alarms": ("误报", "False alarms"),
    "false_share": ("误报率", "False-alarm share"),
    "devices_online": ("在线设备", "Devices online"),
    "devices_total": ("设备总数", "Devices"),
    "buttons_untested": ("30 天未测试的呼叫按钮", "Call buttons untested for 30 days"),
    "people_now": ("当前在院人数", "People present now"),
    "capacity": ("核定床位/托位", "Licensed capacity"),
    "peak": ("峰值", "Peak"),
    "mean": ("均值", "Mean"),
    "occupancy_peak": ("月峰值人数", "Peak present"),
    "occupancy_mean": ("月均人数", "Mean present"),
    "day": ("日期", "Day"),
    "kind": ("类型", "Kind"),
    "total": ("合计", "Total"),
    "rank": ("排名", "Rank"),
    "name": ("名称", "Name"),
    "id": ("编号", "ID"),
    "zone": ("区域", "Zone"),
    "device": ("设备", "Device"),
    "raised": ("发生时间", "Raised"),
    "acknowledged": ("接管时间", "Acknowledged"),
    "acknowledged_by": ("接管人", "Taken over by"),
    "attended": ("到场时间", "Attended"),
    "resolved": ("处置时间", "Resolved"),
    "disposition": ("处置结果", "Disposition"),
    "class": ("班级", "Class"),
    "class_type": ("班型", "Class type"),
    "breaches": ("超标次数", "Breaches"),
    "seconds": ("用时 (秒)", "Time (s)"),
    "acknowledged_n": ("接管", "Acknowledged"),
    "attended_n": ("到场", "Attended"),
    "never": ("未接管/未到场", "Never"),
    "chain_ok": ("完整", "intact"),
    "chain_broken": ("已被篡改", "BROKEN"),
    "chain_status": ("校验结果", "Verification"),
    "chain_rows": ("审计记录数", "Audit rows"),
    "chain_last_id": ("末条记录编号", "Last row"),
    "chain_last_hash": ("末条记录哈希 (SHA-256)", "Last row's hash (SHA-256)"),
    "chain_problem": ("问题", "Problem"),
    "worst_devices": ("误报最多的十台设备", "The ten devices with most false alarms"),
    "untested_list": ("30 天未测试的呼叫按钮", "Call buttons with no test call in 30 days"),
    # explanations printed under the headings
    "note.ranking": (
        "按问题严重程度排序，最差在前：审计链被篡改、超时呼叫多、60 秒内接管率低、"
        "师幼比超标多、误报率高、离线设备多。",
        "Worst first: a broken audit chain, then most overdue calls, lowest share "
        "acknowledged within 60 s, most staff-ratio breaches, highest false-alarm share, "
        "most devices offline.",
    ),
    "note.daily": (
        "紧急呼叫即一键呼叫按钮触发的告警；按日期（{tz}）统计各类告警数。",
        "A call is an alert raised by a call button; alerts of each kind by day ({tz}).",
    ),
    "note.response": (
        "高优先级告警（紧急呼叫、跌倒、长时间无活动）自发生至接管、至到场的用时；"
        "未接管的告警计为超时。",
        "High-priority alerts (calls, falls, no movement), from raising to acknowledging "
        "and to attending; one never acknowledged counts as late.",
    ),
    "note.overdue": (
        "180 秒内未接管、已在监管大屏标记为超时的呼叫。",
        "Calls not acknowledged within 180 s, flagged overdue on the regulator's screen.",
    ),
    "note.false_alarms": (
        "误报率 = 误报 / 工作人员已研判的告警；条件消失后自动恢复的告警（如电量恢复）不计入。",
        "False-alarm share = false alarms / alerts staff resolved and judged; alerts that "
        "resolved by themselves when their condition ended (a battery recharged) do not count.",
    ),
    "note.devices": (
        "在线设备为报告生成时的状态；呼叫按钮须每 30 天至少测试一次。",
        "Devices online as at the report's generation; call buttons are to be tested at "
        "least every 30 days.",
    ),
    "note.occupancy": (
        "人数计数器每 5 分钟汇总；峰值为同一时刻最多人数，均值为有计数时段的平均人数。",
        "People counters summed per 5 minutes; peak is the most present at once, mean the "
        "average while counted.",
    ),
    "note.staff_ratio": (
        "托育班级儿童与保育人员之比超过国家标准持续 5 分钟以上的次数。",
        "Childcare classes where children per staff exceeded the national limit for 5 "
        "minutes or more.",
    ),
    "note.audit": (
        "每条告警变更均写入按机构串联的哈希链；以下为报告生成时对整条链的校验结果及末条记录哈希，"
        "可作为存证。",
        "Every alert change is a row of a hash chain per facility; below, the whole chain "
        "verified when the report was generated, and the hash of its last row, to file as "
        "evidence.",
    ),
    "audit.one_ok": ("审计链完整。", "The audit chain is intact."),
    "audit.all_ok": (
        "全部 {n} 个机构的审计链完整。",
        "The audit chains of all {n} facilities are intact.",
    ),
    "audit.broken": (
        "{n} 个机构的审计链校验失败，见下表。",
        "The audit chains of {n} facilities failed verification; see below.",
    ),
    # alert kinds, dispositions, facility kinds: as the dashboards say them
    "kind.sos": ("紧急呼叫", "Emergency call"),
    "kind.fall": ("跌倒", "Fall"),
    "kind.long_lie": ("跌倒后长时间未起", "Long lie after a fall"),
    "kind.dwell": ("长时间无活动", "No movement"),
    "kind.over_capacity": ("超员", "Over capacity"),
    "kind.staff_ratio": ("师幼比超标", "Staff ratio breached"),
    "kind.device_offline": ("设备离线", "Device offline"),
    "kind.low_battery": ("电量低", "Low battery"),
    "disp.real": ("真实事件", "Real"),
    "disp.false_alarm": ("误报", "False alarm"),
    "disp.test": ("测试", "Test"),
    "disp.other": ("其他", "Other"),
    "disp.self_resolved": ("自动恢复", "Resolved by itself"),
    "fkind.elderly": ("养老", "Elderly care"),
    "fkind.childcare": ("托育", "Childcare"),
    "fkind.integrated": ("托育养老一体", "Integrated"),
}

ALERT_KINDS = (
    "sos",
    "fall",
    "long_lie",
    "dwell",
    "over_capacity",
    "staff_ratio",
    "device_offline",
    "low_battery",
)


def word(lang: Language, key: str, **values: object) -> str:
    """The report's text for `key` in `lang`, with `{name}` filled from `values`."""
    zh, en = _WORDS[key]
    text = zh if lang == "zh" else en
    return text.format(**values) if values else text


def words(lang: Language, *keys: str) -> tuple[str, ...]:
    """The report's texts for `keys` in `lang`, in their order: a table's header."""
    return tuple(word(lang, key) for key in keys)


def coded(lang: Language, prefix: str, value: str | None) -> str:
    """A code's words (`kind.sos` -> 紧急呼叫); the code itself when it has none."""
    if value is None:
        return "—"
    key = f"{prefix}.{value}"
    return word(lang, key) if key in _WORDS else value
