// The district map: every facility at its coordinates, coloured by status. Without a tile
// URL it draws on a plain background inside the district's bounding box (works offline);
// with one (e.g. 天地图) the tiles go underneath.
import L from "leaflet";

import { t } from "../common/i18n";
import type { Facility, FacilityState } from "../common/types";

const COLOURS: Record<FacilityState, string> = {
  ok: "#22c55e",
  alert: "#f59e0b",
  overdue: "#ef4444",
  offline: "#94a3b8",
};
const RADIUS = 7;
// Margin around the facilities' bounding box, in degrees (about 1 km).
const BOX_MARGIN = 0.01;

export class FacilityMap {
  private readonly map: L.Map;
  private readonly markers = new Map<string, L.CircleMarker>();
  private readonly layer = L.layerGroup();
  private box: L.Rectangle | null = null;
  private readonly tiled: boolean;

  constructor(
    container: HTMLElement,
    tileUrl: string | null,
    center: [number, number],
    private readonly onSelect: (facilityId: string) => void,
  ) {
    this.tiled = tileUrl !== null && tileUrl !== "";
    container.classList.toggle("untiled", !this.tiled);
    this.map = L.map(container, {
      center,
      zoom: 12,
      zoomSnap: 0.25,
      attributionControl: this.tiled,
      // SVG markers: 500 paths redraw cheaply and each one can carry its test id.
      preferCanvas: false,
    });
    if (this.tiled && tileUrl !== null) {
      L.tileLayer(tileUrl, { maxZoom: 18, subdomains: ["0", "1", "2", "3", "4", "5", "6", "7"] }).addTo(
        this.map,
      );
    }
    this.layer.addTo(this.map);
    // The KPI band and the feed settle after the first render: follow the container.
    new ResizeObserver(() => this.map.invalidateSize({ animate: false })).observe(container);
  }

  /** Draw every facility (a fresh snapshot). */
  setFacilities(facilities: Iterable<Facility>, names: (facility: Facility) => string): void {
    this.layer.clearLayers();
    this.markers.clear();
    const placed: L.LatLngTuple[] = [];
    for (const facility of facilities) {
      if (facility.latitude === null || facility.longitude === null) {
        continue;
      }
      const position: L.LatLngTuple = [facility.latitude, facility.longitude];
      placed.push(position);
      const marker = L.circleMarker(position, {
        radius: RADIUS,
        weight: 2,
        color: "#0f172a",
        fillOpacity: 0.95,
      });
      marker.bindTooltip(names(facility), { direction: "top", offset: [0, -6] });
      marker.on("click", () => this.onSelect(facility.id));
      marker.addTo(this.layer);
      const element = marker.getElement();
      if (element !== undefined) {
        element.setAttribute("data-testid", "map-facility");
        element.setAttribute("data-facility-id", facility.id);
      }
      this.markers.set(facility.id, marker);
      this.update(facility);
    }
    this.box?.remove();
    this.box = null;
    if (placed.length > 0) {
      const bounds = L.latLngBounds(placed).pad(0);
      const box = L.latLngBounds(
        [bounds.getSouth() - BOX_MARGIN, bounds.getWest() - BOX_MARGIN],
        [bounds.getNorth() + BOX_MARGIN, bounds.getEast() + BOX_MARGIN],
      );
      if (!this.tiled) {
        this.box = L.rectangle(box, {
          color: "#38bdf8",
          weight: 1,
          dashArray: "6 6",
          fill: true,
          fillColor: "#0b2440",
          fillOpacity: 0.6,
          interactive: false,
        }).addTo(this.map);
        this.box.bringToBack();
      }
      this.map.invalidateSize({ animate: false });
      this.map.fitBounds(box, { animate: false, padding: [12, 12] });
    }
  }

  /** Recolour one facility after a status change. */
  update(facility: Facility): void {
    const marker = this.markers.get(facility.id);
    if (marker === undefined) {
      return;
    }
    const state: FacilityState = facility.status?.state ?? "offline";
    marker.setStyle({ fillColor: COLOURS[state], radius: state === "ok" ? RADIUS : RADIUS + 2 });
    marker.getElement()?.setAttribute("data-state", state);
    if (state === "overdue" || state === "alert") {
      marker.bringToFront();
    }
  }

  rename(names: (facilityId: string) => string): void {
    for (const [id, marker] of this.markers) {
      marker.setTooltipContent(names(id));
    }
  }

  resize(): void {
    this.map.invalidateSize();
  }
}

/** The map's legend: one swatch per state, in the current language. */
export function legendItems(): Array<[FacilityState, string, string]> {
  return (Object.keys(COLOURS) as FacilityState[]).map((state) => [
    state,
    COLOURS[state],
    t(`state.${state}`),
  ]);
}
