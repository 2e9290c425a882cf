// Two pages, built into dist/ and served by the hub: the regulator screen at / and the
// staff console at /console/. `npm run dev` proxies the API to a hub on :8080.
import { resolve } from "node:path";
import { defineConfig, type Plugin } from "vite";

import { districtOutlines } from "./outlines";

const hub = process.env.CAREHUB_HUB_URL ?? "http://127.0.0.1:8080";

/** What every page holds, written once: each index.html keeps only its title, viewport and script. */
function sharedPageParts(): Plugin {
  return {
    name: "carehub-shared-page-parts",
    transformIndexHtml: () => [
      { tag: "meta", attrs: { charset: "utf-8" }, injectTo: "head-prepend" },
      // No favicon to fetch: the hub serves nothing but the pages and their assets.
      { tag: "link", attrs: { rel: "icon", href: "data:," }, injectTo: "head" },
      // The root the page's script builds into (src/common/shell.ts).
      { tag: "div", attrs: { id: "app" }, injectTo: "body-prepend" },
    ],
  };
}

export default defineConfig({
  base: "/",
  // The regulator's map draws the demo district and its neighbour, 温州's 鹿城区 and 瓯海区.
  plugins: [
    sharedPageParts(),
    districtOutlines({ city: "zhe4_jiang1_wen1_zhou1", districts: ["鹿城区", "瓯海区"] }),
  ],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // The wall screen and phones load these over a LAN; keep them lean but readable.
    chunkSizeWarningLimit: 800,
    rollupOptions: {
      input: {
        regulator: resolve(import.meta.dirname, "index.html"),
        console: resolve(import.meta.dirname, "console/index.html"),
      },
    },
  },
  server: {
    proxy: {
      "/api": { target: hub, ws: true },
    },
  },
});
