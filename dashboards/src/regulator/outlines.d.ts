// The district outlines the build bundles (../../outlines.ts): WGS 84, one feature per
// district with its name and the point its label stands on ([lon, lat]).
declare module "virtual:district-outlines" {
  import type { FeatureCollection, MultiPolygon, Polygon } from "geojson";

  const outlines: FeatureCollection<
    Polygon | MultiPolygon,
    { name: string; label: [number, number] | null }
  >;
  export default outlines;
}
