// The KPI band: facilities and devices online, people present against beds and 托位, open
// alerts by priority (all from the live statuses), and today's share of high alerts taken
// over within 60 s (from GET /kpis, refreshed; an admin's sums every district on screen).
import { h } from "../common/dom";
import { type Key, t } from "../common/i18n";
import { percent } from "../common/format";
import type { Facility, Kpis, Priority } from "../common/types";

/** Today's high alerts and how many were taken over within 60 s, over one or more scopes. */
export interface AckShare {
  within60: number;
  high: number;
}

/** The share over several scopes' KPIs (an admin's districts): their counts summed. */
export function ackShare(kpis: readonly Kpis[]): AckShare {
  return {
    within60: kpis.reduce((sum, one) => sum + one.ack_within_60s, 0),
    high: kpis.reduce((sum, one) => sum + one.high_alerts, 0),
  };
}

interface Cell {
  value: HTMLElement;
  detail: HTMLElement;
}

export class KpiBand {
  readonly element: HTMLElement;
  private readonly cells: Record<string, Cell> = {};
  private readonly priorities: Record<Priority, HTMLElement>;
  private pending = false;
  private facilities: () => Iterable<Facility> = () => [];
  private ack: AckShare | null = null;

  constructor() {
    this.priorities = {
      high: h("span", { class: "p-high", "data-testid": "kpi-open-high" }),
      medium: h("span", { class: "p-medium", "data-testid": "kpi-open-medium" }),
      low: h("span", { class: "p-low", "data-testid": "kpi-open-low" }),
    };
    this.element = h(
      "section",
      { class: "kpis", "data-testid": "kpi-band" },
      this.cell("facilities-online", "kpi.facilitiesOnline"),
      this.cell("devices-online", "kpi.devicesOnline"),
      this.cell("present", "kpi.present"),
      h(
        "div",
        { class: "kpi", "data-testid": "kpi-open-alerts" },
        h("div", { class: "kpi-label", "data-i18n": "kpi.openAlerts" }),
        h(
          "div",
          { class: "kpi-value priorities" },
          this.priorities.high,
          this.priorities.medium,
          this.priorities.low,
        ),
      ),
      this.cell("ack60", "kpi.ack60"),
    );
  }

  private cell(id: string, labelKey: Key): HTMLElement {
    const value = h("div", { class: "kpi-value", "data-testid": `kpi-${id}-value` }, "—");
    const detail = h("div", { class: "kpi-detail", "data-testid": `kpi-${id}-detail` });
    this.cells[id] = { value, detail };
    return h(
      "div",
      { class: "kpi", "data-testid": `kpi-${id}` },
      h("div", { class: "kpi-label", "data-i18n": labelKey }),
      value,
      detail,
    );
  }

  /** Where the current statuses come from; the band sums them at most once a frame. */
  watch(facilities: () => Iterable<Facility>): void {
    this.facilities = facilities;
    this.schedule();
  }

  schedule(): void {
    if (this.pending) {
      return;
    }
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.render();
    });
  }

  setAck(ack: AckShare | null): void {
    this.ack = ack;
    this.renderAck();
  }

  render(): void {
    let facilities = 0;
    let facilitiesOnline = 0;
    let devices = 0;
    let devicesOnline = 0;
    let present = 0;
    let beds = 0;
    let places = 0;
    const open: Record<Priority, number> = { high: 0, medium: 0, low: 0 };
    for (const facility of this.facilities()) {
      facilities += 1;
      beds += facility.beds;
      places += facility.childcare_places;
      const status = facility.status;
      if (status === null) {
        continue;
      }
      // A facility is online while at least one of its devices is heard.
      if (status.devices_online > 0) {
        facilitiesOnline += 1;
      }
      devices += status.devices_total;
      devicesOnline += status.devices_online;
      present += status.present;
      open.high += status.open_alerts.high;
      open.medium += status.open_alerts.medium;
      open.low += status.open_alerts.low;
    }
    this.set("facilities-online", `${facilitiesOnline} / ${facilities}`, "");
    this.set("devices-online", `${devicesOnline} / ${devices}`, "");
    this.set(
      "present",
      `${present} / ${beds + places}`,
      t("kpi.capacity", { beds, places }),
    );
    for (const priority of ["high", "medium", "low"] as Priority[]) {
      const element = this.priorities[priority];
      element.textContent = `${t(`priority.${priority}`)} ${open[priority]}`;
      element.dataset.count = String(open[priority]);
    }
    this.renderAck();
  }

  private renderAck(): void {
    const ack = this.ack;
    if (ack === null) {
      this.set("ack60", "—", "");
    } else if (ack.high === 0) {
      this.set("ack60", "—", t("kpi.noData"));
    } else {
      this.set(
        "ack60",
        percent(ack.within60 / ack.high),
        t("kpi.ack60Detail", { count: ack.within60, total: ack.high }),
      );
    }
  }

  private set(id: string, value: string, detail: string): void {
    const cell = this.cells[id];
    if (cell !== undefined) {
      cell.value.textContent = value;
      cell.detail.textContent = detail;
    }
  }
}
