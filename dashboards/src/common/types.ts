// The shapes of docs/api.md, as the dashboards read them: all from the hub's OpenAPI
// document under its own names (api.gen.ts, written by `make api-types`, never by hand).
// The live websocket's messages are in it too, as the `LiveMessage` schema.
import type { Alert, FacilityStatus, ResolveIn } from "./api.gen";

// The signed-in account and what the pages read before anything else.
export type { Me, LoginOut, PublicConfig } from "./api.gen";
// SPEC §6's wire shapes, as REST and the live feed both send them; the list routes' pages.
export type { Facility, FacilityDetail, FacilityStatus, Zone, Device, Alert } from "./api.gen";
export type { DeviceList, AlertList, Readings, Kpis } from "./api.gen";
// The live websocket (docs/api.md "Live websocket").
export type { LiveMessage, SnapshotMessage, AlertGroupMessage, AlertProvisionalMessage } from "./api.gen";

// The values the screens colour and count by.
export type FacilityState = FacilityStatus["state"];
export type Priority = Alert["priority"];
export type Disposition = ResolveIn["disposition"];
