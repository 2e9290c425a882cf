// The regulator's screen (监管一屏掌控): map, KPI band, live alert feed, drill-down, export.
import "leaflet/dist/leaflet.css";
import "../common/base.css";
import "./regulator.css";

import { getJson } from "../common/api";
import { h, labelled } from "../common/dom";
import { localIso, startOfToday } from "../common/format";
import { applyStatic, onLanguageChange } from "../common/i18n";
import { LiveConnection, type PageMessage, unknownMessage } from "../common/live";
import { type Shell, startShell } from "../common/shell";
import type { Alert, Facility, Kpis, SnapshotMessage, Zone } from "../common/types";
import { DrillDown } from "./drilldown";
import { exportForm } from "./export";
import { AlertFeed } from "./feed";
import { KpiBand, ackShare } from "./kpis";
import { FacilityMap, legendItems } from "./map";

// Today's acknowledgement share is read again this often, and shortly after any ack.
const ACK_REFRESH_MS = 60_000;
const ACK_DEBOUNCE_MS = 1500;

class RegulatorScreen {
  private readonly facilities = new Map<string, Facility>();
  private readonly zones = new Map<string, Zone[]>();
  private readonly kpis = new KpiBand();
  private readonly feed: AlertFeed;
  private readonly drill = new DrillDown();
  private readonly map: FacilityMap;
  private readonly legend = h("ul", { class: "legend", "data-testid": "map-legend" });
  // An admin sees every district: the exports ask which one (a regulator's is their own).
  private readonly districtPick = h("select", { "data-testid": "export-district" });
  private ackTimer: number | undefined;
  private shown = false;

  constructor(private readonly shell: Shell) {
    this.feed = new AlertFeed({
      facilityName: (id) => this.facilities.get(id)?.name ?? id,
      zoneName: (facilityId, zoneId) =>
        this.zones.get(facilityId)?.find((zone) => zone.zone_id === zoneId)?.name ?? zoneId ?? "",
      onSelect: (id) => void this.drill.open(id),
      openAlerts: async (facilityId) => {
        const query = new URLSearchParams({ state: "open", facility: facilityId, limit: "500" });
        return (await getJson<{ items: Alert[] }>(`/alerts?${query.toString()}`)).items;
      },
    });
    const mapElement = h("div", { class: "map", "data-testid": "map" });
    const layout = h(
      "div",
      { class: "regulator" },
      this.kpis.element,
      h(
        "section",
        { class: "map-panel" },
        mapElement,
        this.legend,
      ),
      h(
        "div",
        { class: "side" },
        this.feed.element,
        exportForm(
          () => this.scope(),
          this.ownScope() ? null : labelled("export.district", this.districtPick),
        ),
      ),
      this.drill.element,
    );
    shell.main.replaceChildren(layout);
    this.map = new FacilityMap(
      mapElement,
      shell.config.tile_url,
      shell.config.map_center,
      (id) => void this.drill.open(id),
    );
    this.kpis.watch(() => this.facilities.values());
    this.renderLegend();
    applyStatic(layout);
    onLanguageChange(() => {
      this.renderLegend();
      this.map.repaint();
      this.kpis.render();
      this.feed.repaint();
      this.drill.repaint();
    });
  }

  start(): void {
    new LiveConnection({
      token: () => sessionStorage.getItem("carehub.token"),
      onMessage: (message) => this.handle(message),
      onState: (state) => this.shell.setConnection(state),
    }).start();
    void this.refreshAck();
    window.setInterval(() => void this.refreshAck(), ACK_REFRESH_MS);
  }

  private handle(message: PageMessage): void {
    switch (message.type) {
      case "snapshot":
        this.snapshot(message);
        break;
      case "alert":
        this.feed.apply(message.alert, message.action);
        this.map.markUnstored(this.feed.unstoredFacilities());
        this.drill.alertChanged(message.alert);
        if (message.action !== "raise") {
          this.scheduleAck();
        }
        break;
      case "alert_group":
        this.feed.applyGroup(message);
        break;
      case "alert_provisional":
        this.feed.applyProvisional(message);
        this.map.markUnstored(this.feed.unstoredFacilities());
        break;
      case "facility_status": {
        const facility = this.facilities.get(message.facility_id);
        if (facility !== undefined) {
          facility.status = message.status;
          this.map.update(facility);
          this.kpis.schedule();
          this.drill.status(facility.id, message.status);
        }
        break;
      }
      case "zone_count": {
        const zone = this.zones.get(message.facility_id)?.find((one) => one.zone_id === message.zone_id);
        if (zone !== undefined) {
          zone.present = message.present;
          zone.staff = message.staff;
        }
        this.drill.zoneCount(message.facility_id, message.zone_id, message.present, message.staff);
        break;
      }
      case "device_status":
        // Device-level: only a facility's own staff and managers get them.
        break;
      default:
        unknownMessage(message);
    }
  }

  private snapshot(message: SnapshotMessage): void {
    this.facilities.clear();
    this.zones.clear();
    for (const facility of message.facilities) {
      this.facilities.set(facility.id, facility);
    }
    for (const [facilityId, zones] of Object.entries(message.zones)) {
      this.zones.set(facilityId, zones);
    }
    this.map.setFacilities(this.facilities.values(), (facility) => facility.name);
    this.pickDistricts();
    this.feed.reset(message.alerts);
    this.map.markUnstored(this.feed.unstoredFacilities());
    this.kpis.render();
    if (!this.shown) {
      this.shown = true;
      // On screen means painted: the next frame after the DOM holds the snapshot.
      requestAnimationFrame(() => {
        document.body.dataset.live = "true";
      });
    }
  }

  /** Whether the account has a scope of its own (a regulator's district, a manager's facility). */
  private ownScope(): boolean {
    return this.shell.me.district !== null || this.shell.me.facility_id !== null;
  }

  /** The districts on screen, the one with the most facilities first. */
  private districts(): string[] {
    const counts = new Map<string, number>();
    for (const facility of this.facilities.values()) {
      counts.set(facility.district, (counts.get(facility.district) ?? 0) + 1);
    }
    return [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).map(([name]) => name);
  }

  /** An admin's export picker offers every district on screen, keeping the one chosen. */
  private pickDistricts(): void {
    if (this.ownScope()) {
      return;
    }
    const chosen = this.districtPick.value;
    const names = this.districts();
    this.districtPick.replaceChildren(...names.map((name) => h("option", { value: name }, name)));
    if (names.includes(chosen)) {
      this.districtPick.value = chosen;
    }
  }

  /** The export scope: a regulator's district, a manager's facility, an admin's pick. */
  private scope(): URLSearchParams | null {
    const me = this.shell.me;
    if (me.district !== null) {
      return new URLSearchParams({ district: me.district });
    }
    if (me.facility_id !== null) {
      return new URLSearchParams({ facility: me.facility_id });
    }
    const picked = this.districtPick.value;
    return picked === "" ? null : new URLSearchParams({ district: picked });
  }

  /** The KPI band's scopes: the account's own, or for an admin every district on screen. */
  private kpiScopes(): URLSearchParams[] | null {
    if (this.ownScope()) {
      return [this.scope() as URLSearchParams];
    }
    const names = this.districts();
    return names.length === 0 ? null : names.map((name) => new URLSearchParams({ district: name }));
  }

  private scheduleAck(): void {
    window.clearTimeout(this.ackTimer);
    this.ackTimer = window.setTimeout(() => void this.refreshAck(), ACK_DEBOUNCE_MS);
  }

  private async refreshAck(): Promise<void> {
    if (this.shell.me.role === "staff") {
      return; // staff have no KPI access (docs/api.md)
    }
    const scopes = this.kpiScopes();
    if (scopes === null) {
      // An admin before the snapshot: try again once facilities are known.
      window.setTimeout(() => void this.refreshAck(), 2000);
      return;
    }
    const from = localIso(startOfToday());
    const to = localIso(new Date(Date.now() + 1000));
    try {
      const kpis = await Promise.all(
        scopes.map((scope) => {
          const query = new URLSearchParams(scope);
          query.set("from", from);
          query.set("to", to);
          return getJson<Kpis>(`/kpis?${query.toString()}`);
        }),
      );
      this.kpis.setAck(ackShare(kpis));
    } catch {
      this.kpis.setAck(null);
    }
  }

  private renderLegend(): void {
    this.legend.replaceChildren(
      ...legendItems().map(([state, colour, text]) =>
        h("li", { "data-state": state }, h("span", { class: "swatch", style: `background:${colour}` }), text),
      ),
    );
  }
}

void startShell("app.regulator", (shell) => new RegulatorScreen(shell).start());
