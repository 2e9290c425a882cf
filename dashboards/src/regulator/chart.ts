// The drill-down's occupancy chart (ECharts, only the parts it uses, loaded on demand).
import { LineChart } from "echarts/charts";
import { GridComponent, LegendComponent, TooltipComponent } from "echarts/components";
import * as echarts from "echarts/core";
import { CanvasRenderer } from "echarts/renderers";

echarts.use([LineChart, GridComponent, LegendComponent, TooltipComponent, CanvasRenderer]);

export interface Series {
  name: string;
  points: Array<[number, number | null]>;
}

// The chart spans the last 24 hours, whatever the readings cover.
const DAY_MS = 24 * 3600 * 1000;
// With this few points a line alone is hard to see: draw each point too.
const FEW_POINTS = 48;

export function drawOccupancy(element: HTMLElement, series: Series[]): () => void {
  const now = Date.now();
  const chart = echarts.init(element, "dark", { renderer: "canvas" });
  chart.setOption({
    backgroundColor: "transparent",
    animation: false,
    grid: { left: 40, right: 16, top: 30, bottom: 28 },
    legend: { top: 0, textStyle: { color: "#cbd5e1" } },
    // Drawn on the canvas: an HTML tooltip carries inline style attributes, which the
    // page's Content-Security-Policy refuses (hub/api/security.py).
    tooltip: { trigger: "axis", renderMode: "richText" },
    xAxis: { type: "time", min: now - DAY_MS, max: now },
    yAxis: { type: "value", minInterval: 1 },
    series: series.map((one) => ({
      name: one.name,
      type: "line",
      showSymbol: one.points.length <= FEW_POINTS,
      areaStyle: { opacity: 0.15 },
      step: "end",
      connectNulls: false,
      data: one.points,
    })),
  });
  const resize = (): void => chart.resize();
  window.addEventListener("resize", resize);
  return () => {
    window.removeEventListener("resize", resize);
    chart.dispose();
  };
}
