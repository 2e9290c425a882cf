// The live alert feed: one row per open alert, newest first, each age ticking every
// second; overdue calls highlighted; a facility's flood (alert_group, or more than
// FLOOD_ROWS open medium/low alerts) collapsed into one line. Rows are added, changed and
// removed one at a time: a message never re-renders the list. A group's line expands to
// every open alert behind it, read from the API (the hub sends a flood as counts only).
import { h, replace } from "../common/dom";
import { age, clock } from "../common/format";
import { label, t } from "../common/i18n";
import { ProvisionalCalls, type ShownCall } from "../common/provisional";
import type { Alert, AlertGroupMessage, AlertProvisionalMessage } from "../common/types";

// SPEC §4: more than 10 alerts at one facility is a flood.
const FLOOD_ROWS = 10;
// A group the hub stopped updating, with nothing open behind it, goes after this long.
const GROUP_QUIET_MS = 10 * 60_000;

interface Row {
  alert: Alert;
  element: HTMLElement;
  age: HTMLElement;
  state: HTMLElement;
  raisedMs: number;
}

interface Group {
  facilityId: string;
  element: HTMLElement;
  text: HTMLElement;
  toggle: HTMLButtonElement;
  list: HTMLElement;
  refresh: number | undefined;
  members: Map<string, Alert>;
  // Alerts the hub counted in its summary (their raise never came), heard of since by a
  // later change: kept to follow their state, never counted twice.
  counted: Set<string>;
  serverKinds: Record<string, number>;
  updatedMs: number;
}

export interface FeedContext {
  facilityName: (facilityId: string) => string;
  zoneName: (facilityId: string, zoneId: string | null) => string;
  onSelect: (facilityId: string) => void;
  /** The facility's open alerts, newest first (GET /alerts?state=open&facility=). */
  openAlerts: (facilityId: string) => Promise<Alert[]>;
}

// An expanded group reads its alerts again this long after its last change.
const GROUP_REFRESH_MS = 500;

export class AlertFeed {
  readonly element: HTMLElement;
  private readonly list: HTMLElement;
  private readonly empty: HTMLElement;
  private readonly rows = new Map<string, Row>();
  private readonly groups = new Map<string, Group>();
  // Alerts decided while the hub's database was unreachable, until the stored one comes.
  private readonly provisional = new ProvisionalCalls();

  constructor(private readonly context: FeedContext) {
    this.list = h("ol", { class: "feed-list", "data-testid": "alert-feed" });
    this.empty = h("p", { class: "feed-empty", "data-i18n": "feed.empty", "data-testid": "feed-empty" });
    this.element = h(
      "section",
      { class: "feed" },
      h("h2", { "data-i18n": "feed.title" }),
      this.empty,
      this.list,
    );
    window.setInterval(() => this.tick(), 1000);
  }

  /** The snapshot's open alerts, replacing whatever was shown. */
  reset(alerts: Alert[]): void {
    this.rows.clear();
    this.groups.clear();
    this.list.replaceChildren();
    const quiet = new Map<string, Alert[]>();
    for (const alert of alerts) {
      if (alert.priority !== "high") {
        const bucket = quiet.get(alert.facility_id) ?? [];
        bucket.push(alert);
        quiet.set(alert.facility_id, bucket);
      }
    }
    const fragment = document.createDocumentFragment();
    const sorted = [...alerts].sort((a, b) => Date.parse(b.raised_at) - Date.parse(a.raised_at));
    for (const alert of sorted) {
      if (alert.priority !== "high" && (quiet.get(alert.facility_id)?.length ?? 0) > FLOOD_ROWS) {
        const group = this.group(alert.facility_id, fragment);
        group.members.set(alert.id, alert);
        continue;
      }
      fragment.appendChild(this.buildRow(alert).element);
    }
    for (const group of this.groups.values()) {
      this.renderGroup(group);
    }
    for (const alert of alerts) {
      this.settle(alert);
    }
    // Still not stored (the hub is replaying what it spooled): they stay on top.
    for (const { element } of this.provisional.entries()) {
      fragment.insertBefore(element, fragment.firstChild);
    }
    this.list.appendChild(fragment);
    this.updateEmpty();
    this.tick();
  }

  /** One alert change from the live feed (`action` as the hub sent it: raise, ack, ...). */
  apply(alert: Alert, action = "raise"): void {
    this.settle(alert);
    const row = this.rows.get(alert.id);
    const group = this.groups.get(alert.facility_id);
    if (alert.state === "resolved") {
      if (row !== undefined) {
        row.element.remove();
        this.rows.delete(alert.id);
      }
      if (group?.members.delete(alert.id) === true) {
        group.counted.delete(alert.id);
        this.renderGroup(group);
      }
      this.updateEmpty();
      return;
    }
    if (row !== undefined) {
      row.alert = alert;
      this.paint(row);
      return;
    }
    if (group !== undefined && alert.priority !== "high") {
      if (action !== "raise" && !group.members.has(alert.id)) {
        group.counted.add(alert.id);
      }
      group.members.set(alert.id, alert);
      this.renderGroup(group);
      return;
    }
    const fresh = this.buildRow(alert);
    this.insert(fresh);
    this.updateEmpty();
  }

  /** An alert decided while the hub could not reach its database: shown on top until stored. */
  applyProvisional(call: AlertProvisionalMessage): void {
    const { entry, added } = this.provisional.show(call, () =>
      h("li", {
        class: "feed-row provisional",
        "data-testid": "feed-provisional",
        "data-priority": call.priority,
        "data-state": "active",
      }),
    );
    this.paintProvisional(entry);
    if (added) {
      this.list.insertBefore(entry.element, this.list.firstChild);
      this.updateEmpty();
    }
  }

  private paintProvisional(entry: ShownCall): void {
    const { call, element } = entry;
    replace(
      element,
      h("span", { class: "dot" }),
      h(
        "div",
        { class: "feed-main" },
        h("div", {}, h("span", { class: "kind" }, label("kind", call.kind))),
        h(
          "span",
          { class: "where" },
          `${this.context.facilityName(call.facility_id)} · ${this.context.zoneName(call.facility_id, call.zone_id)}`,
        ),
      ),
      h(
        "div",
        { class: "feed-side" },
        h("span", { class: "age" }, clock(call.at)),
        h("span", { class: "state", "data-testid": "feed-state" }, t("feed.provisional")),
      ),
    );
  }

  /** The facilities with a call shown that is not stored yet. */
  unstoredFacilities(): Set<string> {
    return this.provisional.facilities();
  }

  /** The stored alert of a call shown provisionally has come: its line goes. */
  private settle(alert: Alert): void {
    if (this.provisional.settle(alert)) {
      this.updateEmpty();
    }
  }

  /** The hub's flood summary for one facility. */
  applyGroup(message: AlertGroupMessage): void {
    const group = this.group(message.facility_id, null);
    group.serverKinds = message.kinds;
    group.updatedMs = Date.now();
    this.renderGroup(group);
  }

  /** Names changed (a language switch): repaint the text of every row. */
  repaint(): void {
    for (const row of this.rows.values()) {
      this.paint(row);
    }
    for (const group of this.groups.values()) {
      this.renderGroup(group);
    }
    for (const entry of this.provisional.entries()) {
      this.paintProvisional(entry);
    }
    this.tick();
  }

  openAlerts(): Iterable<Alert> {
    return [...this.rows.values()].map((row) => row.alert);
  }

  private buildRow(alert: Alert): Row {
    const kind = h("span", { class: "kind" });
    const where = h("button", { class: "where link", type: "button" });
    const ageElement = h("span", { class: "age", "data-testid": "feed-age" });
    const state = h("span", { class: "state", "data-testid": "feed-state" });
    const count = h("span", { class: "count" });
    const element = h(
      "li",
      { class: "feed-row", "data-testid": "feed-alert", "data-alert-id": alert.id },
      h("span", { class: "dot" }),
      h("div", { class: "feed-main" }, h("div", {}, kind, count), where),
      h("div", { class: "feed-side" }, ageElement, state),
    );
    where.addEventListener("click", () => this.context.onSelect(row.alert.facility_id));
    const row: Row = {
      alert,
      element,
      age: ageElement,
      state,
      raisedMs: Date.parse(alert.raised_at),
    };
    this.paint(row);
    // Its age from the start, not from the next second's tick.
    ageElement.textContent = age(row.raisedMs, Date.now());
    this.rows.set(alert.id, row);
    return row;
  }

  private paint(row: Row): void {
    const { alert, element } = row;
    element.dataset.state = alert.state;
    element.dataset.priority = alert.priority;
    element.dataset.overdue = String(alert.overdue);
    element.classList.toggle("overdue", alert.overdue && alert.state === "active");
    const [kind, count, where] = [
      element.querySelector(".kind"),
      element.querySelector(".count"),
      element.querySelector(".where"),
    ];
    if (kind !== null) kind.textContent = label("kind", alert.kind);
    if (count !== null) count.textContent = alert.count > 1 ? t("alert.count", { count: alert.count }) : "";
    if (where !== null) {
      where.textContent = `${this.context.facilityName(alert.facility_id)} · ${this.context.zoneName(alert.facility_id, alert.zone_id)}`;
    }
    const stateText = label("alert", alert.state);
    const who = alert.state === "attended" ? alert.attended_by : alert.acknowledged_by;
    row.state.textContent =
      alert.overdue && alert.state === "active"
        ? `${t("feed.overdue")} · ${stateText}`
        : who
          ? t("alert.by", { state: stateText, who })
          : stateText;
  }

  private insert(row: Row): void {
    // Newest first: a new alert almost always goes on top; walk down only past newer ones.
    for (const child of this.list.children) {
      const id = (child as HTMLElement).dataset.alertId;
      const other = id === undefined ? undefined : this.rows.get(id);
      if (other !== undefined && other.raisedMs <= row.raisedMs) {
        this.list.insertBefore(row.element, child);
        return;
      }
    }
    this.list.appendChild(row.element);
  }

  private group(facilityId: string, into: Node | null): Group {
    const existing = this.groups.get(facilityId);
    if (existing !== undefined) {
      return existing;
    }
    const text = h("button", { class: "group-text link", type: "button", "data-testid": "feed-group-text" });
    const toggle = h("button", {
      class: "group-toggle",
      type: "button",
      "aria-expanded": "false",
      "data-testid": "feed-group-toggle",
    });
    const list = h("ol", { class: "group-members", "data-testid": "feed-group-members" });
    list.hidden = true;
    const element = h(
      "li",
      { class: "feed-row feed-group", "data-testid": "feed-group", "data-facility-id": facilityId },
      h("span", { class: "dot" }),
      h("div", { class: "group-main" }, text, toggle),
      list,
    );
    text.addEventListener("click", () => this.context.onSelect(facilityId));
    const group: Group = {
      facilityId,
      element,
      text,
      toggle,
      list,
      refresh: undefined,
      members: new Map(),
      counted: new Set(),
      serverKinds: {},
      updatedMs: Date.now(),
    };
    toggle.addEventListener("click", () => {
      list.hidden = !list.hidden;
      toggle.setAttribute("aria-expanded", String(!list.hidden));
      this.paintToggle(group);
      if (list.hidden) {
        list.replaceChildren();
      } else {
        void this.loadMembers(group);
      }
    });
    this.paintToggle(group);
    this.groups.set(facilityId, group);
    // Rows of the facility's quiet alerts fold into the group from now on.
    for (const [id, row] of this.rows) {
      if (row.alert.facility_id === facilityId && row.alert.priority !== "high") {
        group.members.set(id, row.alert);
        row.element.remove();
        this.rows.delete(id);
      }
    }
    (into ?? this.list).insertBefore(element, (into ?? this.list).firstChild);
    return group;
  }

  private renderGroup(group: Group): void {
    const kinds: Record<string, number> = { ...group.serverKinds };
    for (const alert of group.members.values()) {
      if (!group.counted.has(alert.id)) {
        kinds[alert.kind] = (kinds[alert.kind] ?? 0) + 1;
      }
    }
    const total = Object.values(kinds).reduce((sum, n) => sum + n, 0);
    if (total === 0) {
      group.element.remove();
      this.groups.delete(group.facilityId);
      this.updateEmpty();
      return;
    }
    group.element.dataset.count = String(total);
    group.text.textContent = t("feed.group", {
      facility: this.context.facilityName(group.facilityId),
      count: total,
      kinds: Object.entries(kinds)
        .sort((a, b) => b[1] - a[1])
        .map(([kind, n]) => `${label("kind", kind)} ${n}`)
        .join(" · "),
    });
    this.paintToggle(group);
    if (!group.list.hidden) {
      window.clearTimeout(group.refresh);
      group.refresh = window.setTimeout(() => void this.loadMembers(group), GROUP_REFRESH_MS);
    }
    this.updateEmpty();
  }

  private paintToggle(group: Group): void {
    group.toggle.textContent = t(group.list.hidden ? "feed.expand" : "feed.collapse");
  }

  /** Fill an expanded group with the facility's open medium and low alerts, one line each. */
  private async loadMembers(group: Group): Promise<void> {
    let alerts: Alert[];
    try {
      alerts = await this.context.openAlerts(group.facilityId);
    } catch {
      return; // the next change or a click tries again; the group's counts stay on screen
    }
    if (group.list.hidden) {
      return;
    }
    const now = Date.now();
    group.list.replaceChildren(
      ...alerts
        .filter((alert) => alert.priority !== "high")
        .map((alert) =>
          h(
            "li",
            {
              class: "group-member",
              "data-testid": "feed-group-member",
              "data-alert-id": alert.id,
              "data-kind": alert.kind,
            },
            h("span", { class: "kind" }, label("kind", alert.kind)),
            h(
              "span",
              { class: "where" },
              [this.context.zoneName(alert.facility_id, alert.zone_id), alert.device_id]
                .filter((part) => part !== null && part !== "")
                .join(" · "),
            ),
            h("span", { class: "age" }, age(Date.parse(alert.raised_at), now)),
          ),
        ),
    );
  }

  private tick(): void {
    const now = Date.now();
    for (const row of this.rows.values()) {
      row.age.textContent = age(row.raisedMs, now);
    }
    for (const group of [...this.groups.values()]) {
      if (group.members.size === 0 && now - group.updatedMs > GROUP_QUIET_MS) {
        group.serverKinds = {};
        this.renderGroup(group);
      }
    }
  }

  private updateEmpty(): void {
    this.empty.hidden = this.rows.size > 0 || this.groups.size > 0 || this.provisional.size > 0;
  }
}
