// Every string a person reads, one dictionary per language. 简体中文 is the default;
// the choice is remembered in localStorage. Static text carries data-i18n="key" and is
// swapped in place; dynamic parts re-render through onLanguageChange.

const zh = {
  "app.regulator": "一老一小 · 监管一屏掌控",
  "app.console": "一老一小 · 值班台",
  "lang.toggle": "EN",
  "lang.name": "中文",
  "login.title": "登录",
  "login.username": "用户名",
  "login.password": "密码",
  "login.submit": "登录",
  "login.failed": "用户名或密码不正确",
  "login.limited": "登录失败次数过多，请 {seconds} 秒后再试（账号被锁定时可请管理员解锁）",
  "login.error": "无法登录：{message}",
  "logout": "退出",
  "conn.connecting": "正在连接…",
  "conn.live": "实时",
  "conn.partial": "数据库暂不可用 · 新呼叫仍会送达",
  "conn.lost": "连接已断开，正在重连…",
  "conn.signedOut": "登录已失效，请重新登录",
  "health.brokerDropped":
    "消息代理因队列已满丢弃了 {count} 条发往本中心的消息，这些消息已丢失。请运行 carehub doctor 查看应调整的设置。",
  "health.database": "数据库不可用：已在本地暂存 {batches} 批消息，恢复后自动写入。",
  "health.mqtt": "本中心未连接到消息代理，设备消息暂时无法接收。",
  "kpi.facilitiesOnline": "机构在线",
  "kpi.devicesOnline": "设备在线",
  "kpi.present": "在院/在托人数",
  "kpi.capacity": "床位 {beds} · 托位 {places}",
  "kpi.openAlerts": "未结告警",
  "kpi.ack60": "今日 60 秒内接管率",
  "kpi.ack60Detail": "{count}/{total} 条高优先级",
  "kpi.noData": "今日无高优先级告警",
  "priority.high": "高",
  "priority.medium": "中",
  "priority.low": "低",
  "map.title": "辖区地图",
  "map.offline": "离线底图",
  "map.cluster": "{count} 家机构，点击放大",
  "map.unplaced": "{count} 家机构未登记经纬度，不在地图上",
  "map.outside": "{count} 家机构的经纬度远在辖区外，请核对",
  "state.ok": "正常",
  "state.alert": "有告警",
  "state.overdue": "超时未接",
  "state.offline": "设备离线",
  "feed.title": "实时告警",
  "feed.empty": "当前没有未结告警",
  "feed.group": "{facility}：{count} 条告警（{kinds}）",
  "feed.overdue": "超时",
  "feed.expand": "展开",
  "feed.collapse": "收起",
  "feed.provisional": "未入库 · 数据库暂不可用",
  "alert.active": "待接管",
  "alert.acknowledged": "已接管",
  "alert.attended": "已到场",
  "alert.resolved": "已处置",
  "alert.by": "{state} · {who}",
  "alert.count": "×{count}",
  "kind.sos": "紧急呼叫",
  "kind.fall": "跌倒",
  "kind.long_lie": "跌倒后长时间未起",
  "kind.dwell": "长时间无活动",
  "kind.over_capacity": "超员",
  "kind.staff_ratio": "师幼比超标",
  "kind.device_offline": "设备离线",
  "kind.low_battery": "电量低",
  "disp.real": "真实事件",
  "disp.false_alarm": "误报",
  "disp.test": "测试",
  "disp.other": "其他",
  "disp.self_resolved": "自动恢复",
  "facility.elderly": "养老",
  "facility.childcare": "托育",
  "facility.integrated": "托育养老一体",
  "drill.close": "关闭",
  "drill.zones": "区域",
  "drill.zone": "区域",
  "drill.presentCapacity": "在场/容量",
  "drill.ratio": "师幼比",
  "drill.ratioValue": "{children} 名幼儿 : {staff} 名保育员（上限 1:{limit}）",
  "drill.devices": "设备",
  "drill.device": "设备",
  "drill.type": "类型",
  "drill.battery": "电量",
  "drill.lastSeen": "最后上报",
  "drill.online": "在线",
  "drill.offline": "离线",
  "drill.occupancy": "24 小时在场人数",
  "drill.history": "告警记录",
  "drill.raised": "发生时间",
  "drill.kind": "类型",
  "drill.state": "状态",
  "drill.ackBy": "接管人",
  "drill.ackAfter": "接管用时",
  "drill.disposition": "处置结果",
  "drill.noHistory": "暂无告警记录",
  "drill.noCounters": "该机构没有人数计数器",
  "drill.loading": "加载中…",
  "drill.address": "地址",
  "drill.registration": "备案号",
  "device.fall_sensor": "跌倒检测",
  "device.emergency_button": "一键呼叫",
  "device.occupancy_counter": "人数计数器",
  "export.title": "导出 KPI 报表",
  "export.district": "辖区",
  "export.from": "从",
  "export.to": "到",
  "export.button": "导出 CSV",
  "export.failed": "导出失败：{message}",
  "report.title": "月度监管报告",
  "report.month": "月份",
  "report.format": "格式",
  "report.button": "下载月度报告",
  "console.empty": "暂无待处理告警",
  "console.ack": "我来接管",
  "console.attend": "已到场",
  "console.resolve": "处置完成",
  "console.resolveAs": "处置结果：",
  "console.cancel": "取消",
  "console.takenBy": "{who} 已接管",
  "console.attendedBy": "{who} 已到场",
  "console.mine": "你",
  "console.sound": "开启提示音",
  "console.failed": "操作失败：{message}",
  "console.newAlert": "新告警：{kind}",
  "console.provisional": "数据库暂不可用，告警尚未入库，暂不能接管；请先前往现场",
  "time.seconds": "{s} 秒",
  "time.minutes": "{m} 分 {s} 秒",
  "time.hours": "{h} 小时 {m} 分",
  "unit.people": "人",
  "zone.none": "未指定区域",
  "error.http": "服务器返回 {status}",
  "error.network": "无法连接到服务器",
} as const;

export type Key = keyof typeof zh;

const en: Record<Key, string> = {
  "app.regulator": "Elderly & childcare · Supervision screen",
  "app.console": "Elderly & childcare · Duty console",
  "lang.toggle": "中文",
  "lang.name": "English",
  "login.title": "Sign in",
  "login.username": "Username",
  "login.password": "Password",
  "login.submit": "Sign in",
  "login.failed": "Wrong username or password",
  "login.limited": "Too many failed sign-ins; try again in {seconds} s (an administrator can unlock a locked account)",
  "login.error": "Cannot sign in: {message}",
  logout: "Sign out",
  "conn.connecting": "Connecting…",
  "conn.live": "Live",
  "conn.partial": "Database unreachable · new calls still arrive",
  "conn.lost": "Disconnected, reconnecting…",
  "conn.signedOut": "Your session has ended; please sign in again",
  "health.brokerDropped":
    "The broker dropped {count} messages meant for the hub because its queue was full; they are lost. Run carehub doctor to see which settings to change.",
  "health.database": "The database is unavailable: {batches} batches are spooled here and will be written when it is back.",
  "health.mqtt": "The hub is not connected to the broker; device messages cannot arrive.",
  "kpi.facilitiesOnline": "Facilities online",
  "kpi.devicesOnline": "Devices online",
  "kpi.present": "People present",
  "kpi.capacity": "{beds} beds · {places} childcare places",
  "kpi.openAlerts": "Open alerts",
  "kpi.ack60": "Taken over within 60 s today",
  "kpi.ack60Detail": "{count} of {total} high-priority",
  "kpi.noData": "No high-priority alerts today",
  "priority.high": "High",
  "priority.medium": "Medium",
  "priority.low": "Low",
  "map.title": "District map",
  "map.offline": "Offline base map",
  "map.cluster": "{count} facilities: click to zoom in",
  "map.unplaced": "{count} facilities have no coordinates and are not on the map",
  "map.outside": "{count} facilities have coordinates far outside the district: please check them",
  "state.ok": "OK",
  "state.alert": "Open alert",
  "state.overdue": "Overdue",
  "state.offline": "Devices offline",
  "feed.title": "Live alerts",
  "feed.empty": "No open alerts",
  "feed.group": "{facility}: {count} alerts ({kinds})",
  "feed.overdue": "Overdue",
  "feed.expand": "Show all",
  "feed.collapse": "Hide",
  "feed.provisional": "Not stored yet · database unreachable",
  "alert.active": "Waiting",
  "alert.acknowledged": "Taken over",
  "alert.attended": "On site",
  "alert.resolved": "Resolved",
  "alert.by": "{state} · {who}",
  "alert.count": "×{count}",
  "kind.sos": "Emergency call",
  "kind.fall": "Fall",
  "kind.long_lie": "Long lie after a fall",
  "kind.dwell": "No movement",
  "kind.over_capacity": "Over capacity",
  "kind.staff_ratio": "Staff ratio breached",
  "kind.device_offline": "Device offline",
  "kind.low_battery": "Low battery",
  "disp.real": "Real",
  "disp.false_alarm": "False alarm",
  "disp.test": "Test",
  "disp.other": "Other",
  "disp.self_resolved": "Resolved by itself",
  "facility.elderly": "Elderly care",
  "facility.childcare": "Childcare",
  "facility.integrated": "Integrated",
  "drill.close": "Close",
  "drill.zones": "Zones",
  "drill.zone": "Zone",
  "drill.presentCapacity": "Present / capacity",
  "drill.ratio": "Staff ratio",
  "drill.ratioValue": "{children} children : {staff} staff (limit 1:{limit})",
  "drill.devices": "Devices",
  "drill.device": "Device",
  "drill.type": "Type",
  "drill.battery": "Battery",
  "drill.lastSeen": "Last seen",
  "drill.online": "Online",
  "drill.offline": "Offline",
  "drill.occupancy": "People present, last 24 hours",
  "drill.history": "Alert history",
  "drill.raised": "Raised",
  "drill.kind": "Kind",
  "drill.state": "State",
  "drill.ackBy": "Taken over by",
  "drill.ackAfter": "Time to take over",
  "drill.disposition": "Disposition",
  "drill.noHistory": "No alerts yet",
  "drill.noCounters": "This facility has no occupancy counter",
  "drill.loading": "Loading…",
  "drill.address": "Address",
  "drill.registration": "Registration no.",
  "device.fall_sensor": "Fall sensor",
  "device.emergency_button": "Call button",
  "device.occupancy_counter": "Occupancy counter",
  "export.title": "KPI export",
  "export.district": "District",
  "export.from": "From",
  "export.to": "To",
  "export.button": "Export CSV",
  "export.failed": "Export failed: {message}",
  "report.title": "Monthly supervision report",
  "report.month": "Month",
  "report.format": "Format",
  "report.button": "Download the monthly report",
  "console.empty": "No alerts to handle",
  "console.ack": "Take over",
  "console.attend": "On site",
  "console.resolve": "Resolve",
  "console.resolveAs": "Resolve as:",
  "console.cancel": "Cancel",
  "console.takenBy": "Taken over by {who}",
  "console.attendedBy": "{who} is on site",
  "console.mine": "you",
  "console.sound": "Turn on sound",
  "console.failed": "Failed: {message}",
  "console.newAlert": "New alert: {kind}",
  "console.provisional": "The database is unreachable: this alert is not stored yet and cannot be taken over. Go now",
  "time.seconds": "{s} s",
  "time.minutes": "{m} min {s} s",
  "time.hours": "{h} h {m} min",
  "unit.people": "people",
  "zone.none": "No zone",
  "error.http": "The server answered {status}",
  "error.network": "Cannot reach the server",
};

export type Language = "zh-CN" | "en";

const DICTIONARIES: Record<Language, Record<Key, string>> = { "zh-CN": zh, en };
const STORAGE_KEY = "carehub.lang";
const listeners = new Set<() => void>();

function stored(): Language | null {
  const value = localStorage.getItem(STORAGE_KEY);
  return value === "en" || value === "zh-CN" ? value : null;
}

let current: Language = stored() ?? "zh-CN";

export function language(): Language {
  return current;
}

/** A server default applies only while the person has not chosen a language. */
export function setDefaultLanguage(value: string): void {
  if (stored() === null && (value === "en" || value === "zh-CN")) {
    current = value;
  }
}

export function setLanguage(value: Language): void {
  current = value;
  localStorage.setItem(STORAGE_KEY, value);
  applyStatic(document);
  for (const listener of listeners) {
    listener();
  }
}

export function toggleLanguage(): void {
  setLanguage(current === "zh-CN" ? "en" : "zh-CN");
}

export function onLanguageChange(listener: () => void): void {
  listeners.add(listener);
}

/** The text of `key` in the current language, with {name} placeholders filled in. */
export function t(key: Key, values: Record<string, string | number> = {}): string {
  const template = DICTIONARIES[current][key];
  return template.replace(/\{(\w+)\}/g, (whole, name: string) =>
    name in values ? String(values[name]) : whole,
  );
}

/** Text from the dictionary when there is an entry (e.g. an alert kind), else the raw value. */
export function label(prefix: string, value: string): string {
  const key = `${prefix}.${value}`;
  return key in zh ? t(key as Key) : value;
}

/** Swap every data-i18n element's text (and data-i18n-placeholder) to the current language. */
export function applyStatic(root: ParentNode): void {
  document.documentElement.lang = current;
  for (const element of root.querySelectorAll<HTMLElement>("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n as Key);
  }
  for (const element of root.querySelectorAll<HTMLInputElement>("[data-i18n-placeholder]")) {
    element.placeholder = t(element.dataset.i18nPlaceholder as Key);
  }
}
