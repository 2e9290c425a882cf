// Two pages, built into dist/ and served by the hub: the regulator screen at / and the
// staff console at /console/. `npm run dev` proxies the API to a hub on :8080.
import { resolve } from "node:path";
import { defineConfig } from "vite";

const hub = process.env.CAREHUB_HUB_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  base: "/",
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
