// One facility in detail: zones with counts against capacity, the staff ratio of each
// childcare class, devices with battery and last seen, 24 hours of occupancy, and the
// alert history with dispositions. Opened from the map or the feed; kept current by the
// live feed while open.
import { getJson } from "../common/api";
import { h, replace } from "../common/dom";
import { age, dateTime } from "../common/format";
import { applyStatic, type Key, label, t } from "../common/i18n";
import { errorText } from "../common/shell";
import type { Alert, AlertList, Device, DeviceList, FacilityDetail, FacilityStatus, Readings, Zone } from "../common/types";

// The alert history shows this many of the facility's latest alerts.
const HISTORY = 100;
// A changed alert refreshes the history after this pause, so a burst costs one request.
const HISTORY_DEBOUNCE_MS = 800;

export class DrillDown {
  readonly element: HTMLElement;
  private readonly body: HTMLElement;
  private readonly title: HTMLElement;
  private facilityId: string | null = null;
  private detail: FacilityDetail | null = null;
  private devices: Device[] = [];
  private history: Alert[] = [];
  private disposeChart: (() => void) | null = null;
  private historyTimer: number | undefined;
  private generation = 0;

  constructor() {
    this.title = h("h2", { "data-testid": "drill-title" });
    this.body = h("div", { class: "drill-body" });
    this.element = h(
      "aside",
      { class: "drill", "data-testid": "drilldown", hidden: true },
      h(
        "header",
        {},
        this.title,
        h("button", {
          type: "button",
          class: "close",
          "data-i18n": "drill.close",
          "data-testid": "drill-close",
          onclick: () => this.close(),
        }),
      ),
      this.body,
    );
  }

  get openFacility(): string | null {
    return this.facilityId;
  }

  async open(facilityId: string): Promise<void> {
    this.close();
    this.facilityId = facilityId;
    const generation = ++this.generation;
    this.element.hidden = false;
    this.element.dataset.facilityId = facilityId;
    this.element.dataset.loaded = "false";
    this.title.textContent = "";
    replace(this.body, h("p", { "data-i18n": "drill.loading" }));
    applyStatic(this.body);
    try {
      const query = encodeURIComponent(facilityId);
      const [detail, devices, history] = await Promise.all([
        getJson<FacilityDetail>(`/facilities/${query}`),
        getJson<DeviceList>(`/devices?facility=${query}&limit=500`),
        getJson<AlertList>(`/alerts?facility=${query}&limit=${HISTORY}`),
      ]);
      if (generation !== this.generation) {
        return;
      }
      this.detail = detail;
      this.devices = devices.items;
      this.history = history.items;
      this.render();
      this.element.dataset.loaded = "true";
      await this.drawChart(generation);
    } catch (exc) {
      if (generation === this.generation) {
        replace(this.body, h("p", { class: "error" }, errorText(exc)));
      }
    }
  }

  close(): void {
    this.generation += 1;
    this.facilityId = null;
    this.detail = null;
    this.disposeChart?.();
    this.disposeChart = null;
    window.clearTimeout(this.historyTimer);
    this.element.hidden = true;
    delete this.element.dataset.facilityId;
  }

  /** Live: a facility's status changed. */
  status(facilityId: string, status: FacilityStatus): void {
    if (this.detail !== null && facilityId === this.facilityId) {
      this.detail.status = status;
      this.renderTitle();
    }
  }

  /** Live: a zone's count changed. */
  zoneCount(facilityId: string, zoneId: string, present: number | null, staff: number | null): void {
    if (this.detail === null || facilityId !== this.facilityId) {
      return;
    }
    const zone = this.detail.zones.find((one) => one.zone_id === zoneId);
    if (zone !== undefined) {
      zone.present = present;
      zone.staff = staff;
      const row = this.body.querySelector(`[data-zone-id="${CSS.escape(zoneId)}"]`);
      row?.replaceWith(this.zoneRow(zone));
    }
  }

  /** Live: an alert of the open facility changed; the history is read again shortly. */
  alertChanged(alert: Alert): void {
    if (alert.facility_id !== this.facilityId) {
      return;
    }
    window.clearTimeout(this.historyTimer);
    const generation = this.generation;
    this.historyTimer = window.setTimeout(() => {
      getJson<AlertList>(`/alerts?facility=${encodeURIComponent(alert.facility_id)}&limit=${HISTORY}`)
        .then((page) => {
          if (generation === this.generation) {
            this.history = page.items;
            this.body.querySelector('[data-testid="drill-history"]')?.replaceWith(this.historyTable());
          }
        })
        .catch(() => undefined);
    }, HISTORY_DEBOUNCE_MS);
  }

  /** The language changed: everything but the chart is text, so render again. */
  repaint(): void {
    if (this.detail !== null) {
      this.render();
      void this.drawChart(this.generation);
    }
  }

  private renderTitle(): void {
    if (this.detail === null) {
      return;
    }
    const state = this.detail.status?.state ?? "offline";
    this.title.textContent = `${this.detail.name} · ${label("facility", this.detail.kind)} · ${t(`state.${state}`)}`;
    this.title.dataset.state = state;
  }

  private render(): void {
    const detail = this.detail;
    if (detail === null) {
      return;
    }
    this.renderTitle();
    const zoneTable = table(
      "drill-zones",
      ["drill.zone", "drill.presentCapacity", "drill.ratio"],
      detail.zones.map((zone) => this.zoneRow(zone)),
    );
    const zoneName = (zoneId: string | null): string =>
      detail.zones.find((zone) => zone.zone_id === zoneId)?.name ?? zoneId ?? t("zone.none");
    const now = Date.now();
    const deviceTable = table(
      "drill-devices",
      ["drill.device", "drill.type", "drill.zone", "drill.battery", "drill.lastSeen"],
      this.devices.map((device) =>
        h(
          "tr",
          {
            "data-testid": "drill-device",
            "data-device-id": device.id,
            "data-online": String(device.online),
            class: device.online ? "" : "offline",
          },
          h("td", {}, h("span", { class: `dot ${device.online ? "on" : "off"}` }), device.id),
          h("td", {}, label("device", device.type)),
          h("td", {}, zoneName(device.zone_id)),
          h(
            "td",
            { class: device.battery !== null && device.battery <= 15 ? "low" : "" },
            device.battery === null ? "—" : `${Math.round(device.battery)}%`,
          ),
          h(
            "td",
            { title: dateTime(device.last_seen) },
            device.last_seen === null ? "—" : age(Date.parse(device.last_seen), now),
          ),
        ),
      ),
    );
    replace(
      this.body,
      h(
        "p",
        { class: "drill-meta" },
        `${t("drill.address")}：${detail.address || "—"}　${t("drill.registration")}：${detail.registration_no || "—"}`,
      ),
      h("h3", { "data-i18n": "drill.zones" }),
      zoneTable,
      h("h3", { "data-i18n": "drill.occupancy" }),
      h("div", { class: "chart", "data-testid": "drill-chart" }),
      h("h3", { "data-i18n": "drill.devices" }),
      deviceTable,
      h("h3", { "data-i18n": "drill.history" }),
      this.historyTable(),
    );
    applyStatic(this.body);
  }

  private zoneRow(zone: Zone): HTMLElement {
    const present = zone.present === null ? "—" : String(zone.present);
    const capacity = zone.capacity === null ? "—" : String(zone.capacity);
    let ratio = "";
    if (zone.staff_ratio_limit !== null && zone.present !== null) {
      const staff = zone.staff ?? 0;
      ratio = t("drill.ratioValue", {
        children: Math.max(0, zone.present - staff),
        staff,
        limit: zone.staff_ratio_limit,
      });
    }
    return h(
      "tr",
      {
        "data-testid": "drill-zone",
        "data-zone-id": zone.zone_id,
        class: zone.over_capacity || zone.ratio_breached ? "breach" : "",
      },
      h("td", {}, zone.name, zone.class_type ? h("small", {}, ` ${zone.class_type}`) : null),
      h("td", { class: zone.over_capacity ? "bad" : "", "data-testid": "drill-zone-count" }, `${present} / ${capacity}`),
      h("td", { class: zone.ratio_breached ? "bad" : "" }, ratio),
    );
  }

  private historyTable(): HTMLElement {
    if (this.history.length === 0) {
      return h("p", { "data-testid": "drill-history", "data-i18n": "drill.noHistory" }, t("drill.noHistory"));
    }
    const zones = this.detail?.zones ?? [];
    return table(
      "drill-history",
      [
        "drill.raised",
        "drill.kind",
        "drill.zone",
        "drill.state",
        "drill.ackBy",
        "drill.ackAfter",
        "drill.disposition",
      ],
      this.history.map((alert) =>
        h(
          "tr",
          { "data-testid": "drill-alert", "data-alert-id": alert.id, "data-state": alert.state },
          h("td", {}, dateTime(alert.raised_at)),
          h("td", {}, label("kind", alert.kind)),
          h("td", {}, zones.find((zone) => zone.zone_id === alert.zone_id)?.name ?? alert.zone_id ?? "—"),
          h("td", {}, label("alert", alert.state)),
          h("td", {}, alert.acknowledged_by ?? "—"),
          h(
            "td",
            {},
            alert.acknowledged_at === null
              ? "—"
              : age(Date.parse(alert.raised_at), Date.parse(alert.acknowledged_at)),
          ),
          h("td", {}, alert.disposition === null ? "—" : label("disp", alert.disposition)),
        ),
      ),
    );
  }

  private async drawChart(generation: number): Promise<void> {
    const element = this.body.querySelector<HTMLElement>('[data-testid="drill-chart"]');
    const detail = this.detail;
    if (element === null || detail === null) {
      return;
    }
    const counters = this.devices.filter((device) => device.type === "occupancy_counter");
    if (counters.length === 0) {
      element.classList.add("empty");
      element.textContent = t("drill.noCounters");
      element.dataset.points = "0";
      return;
    }
    const [chart, readings] = await Promise.all([
      import("./chart"),
      Promise.all(
        counters.map((device) =>
          getJson<Readings>(`/devices/${encodeURIComponent(device.id)}/readings?bucket=5m`).catch(
            () => null,
          ),
        ),
      ),
    ]);
    if (generation !== this.generation) {
      return;
    }
    const series = counters.map((device, index) => ({
      name: detail.zones.find((zone) => zone.zone_id === device.zone_id)?.name ?? device.id,
      points: (readings[index]?.points ?? []).map(
        (point): [number, number | null] => [Date.parse(point.t), point.count_max ?? point.count_avg],
      ),
    }));
    this.disposeChart?.();
    element.replaceChildren();
    this.disposeChart = chart.drawOccupancy(element, series);
    element.dataset.points = String(series.reduce((sum, one) => sum + one.points.length, 0));
  }
}

/** A table of the drill-down: one header row (i18n keys), then its rows. */
function table(testId: string, headings: Key[], rows: HTMLElement[]): HTMLElement {
  return h(
    "table",
    { "data-testid": testId },
    h("thead", {}, h("tr", {}, ...headings.map((key) => h("th", { "data-i18n": key }, t(key))))),
    h("tbody", {}, ...rows),
  );
}
