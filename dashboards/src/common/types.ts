// The shapes of docs/api.md, as the dashboards read them. What the REST API returns comes
// from the hub's OpenAPI document under its own names (api.gen.ts, written by
// `make api-types`, never by hand); only what the document does not describe is spelled
// out here.
import type { Alert, Device, Facility, FacilityStatus, ResolveIn, Zone } from "./api.gen";

// The signed-in account and what the pages read before anything else.
export type { Me, LoginOut, PublicConfig } from "./api.gen";
// SPEC §6's wire shapes, as REST and the live feed both send them; the list routes' pages.
export type { Facility, FacilityDetail, FacilityStatus, Zone, Device, Alert } from "./api.gen";
export type { DeviceList, AlertList, Readings } from "./api.gen";

// The values the screens colour and count by.
export type FacilityState = FacilityStatus["state"];
export type Priority = Alert["priority"];
export type Disposition = ResolveIn["disposition"];

// GET /kpis answers with a plain object the document leaves untyped; the fields the
// KPI band reads.
export interface Kpis {
  high_alerts: number;
  ack_within_60s: number;
  ack_within_60s_share: number | null;
  ack_within_180s_share: number | null;
  overdue_calls: number;
  devices_total: number;
  devices_online: number;
  people_present: number;
  capacity: number;
}

// Live websocket messages (docs/api.md "Live websocket"): the websocket is not in the
// OpenAPI document, so its envelopes are written here around the generated shapes.
export interface SnapshotMessage {
  type: "snapshot";
  change_id: number;
  facilities: Facility[];
  alerts: Alert[];
  zones: Record<string, Zone[]>;
  devices?: Device[];
}
export interface ResumedMessage {
  type: "resumed";
  change_id: number;
}
export interface AlertMessage {
  type: "alert";
  change_id: number;
  action: string;
  previous: string | null;
  actor: string | null;
  at: string;
  note: string | null;
  alert: Alert;
}
export interface AlertGroupMessage {
  type: "alert_group";
  facility_id: string;
  count: number;
  kinds: Record<string, number>;
  text: string;
}
export interface FacilityStatusMessage {
  type: "facility_status";
  facility_id: string;
  status: FacilityStatus;
}
export interface DeviceStatusMessage {
  type: "device_status";
  device: Device;
}
export interface ZoneCountMessage {
  type: "zone_count";
  facility_id: string;
  zone_id: string;
  present: Zone["present"];
  staff: Zone["staff"];
}
export interface PingMessage {
  type: "ping";
  at: string;
}
export interface LaggingMessage {
  type: "lagging";
  message: string;
}

export type LiveMessage =
  | SnapshotMessage
  | ResumedMessage
  | AlertMessage
  | AlertGroupMessage
  | FacilityStatusMessage
  | DeviceStatusMessage
  | ZoneCountMessage
  | PingMessage
  | LaggingMessage;
