// The shapes of docs/api.md, as the dashboards read them.

export type Role = "admin" | "regulator" | "manager" | "staff";
export type Priority = "high" | "medium" | "low";
export type AlertState = "active" | "acknowledged" | "attended" | "resolved";
export type Disposition = "real" | "false_alarm" | "test" | "other";
export type FacilityState = "ok" | "alert" | "overdue" | "offline";

export interface Me {
  username: string;
  role: Role;
  facility_id: string | null;
  district: string | null;
  display_name: string;
}

export interface LoginAnswer {
  token: string;
  expires_at: string;
  user: Me;
}

export interface PublicConfig {
  tile_url: string | null;
  map_center: [number, number];
  default_language: string;
}

export interface FacilityStatus {
  state: FacilityState;
  open_alerts: Record<Priority, number>;
  overdue: number;
  devices_total: number;
  devices_online: number;
  present: number;
  staff: number;
}

export interface Facility {
  id: string;
  name: string;
  kind: "elderly" | "childcare" | "integrated";
  district: string;
  address: string;
  latitude: number | null;
  longitude: number | null;
  registration_no: string;
  beds: number;
  childcare_places: number;
  status: FacilityStatus | null;
}

export interface Zone {
  zone_id: string;
  name: string;
  kind: "room" | "class" | "common";
  capacity: number | null;
  class_type: string | null;
  present: number | null;
  staff: number | null;
  staff_ratio_limit: number | null;
  over_capacity: boolean;
  ratio_breached: boolean;
}

export interface FacilityDetail extends Facility {
  zones: Zone[];
  devices_by_type: Record<string, number>;
}

export interface Device {
  id: string;
  facility_id: string;
  zone_id: string | null;
  type: "fall_sensor" | "emergency_button" | "occupancy_counter" | string;
  vendor: string;
  model: string;
  heartbeat_s: number;
  online: boolean;
  battery: number | null;
  last_seen: string | null;
  presence: boolean | null;
  count: number | null;
  staff: number | null;
}

export interface Alert {
  id: string;
  facility_id: string;
  zone_id: string | null;
  device_id: string | null;
  kind: string;
  priority: Priority;
  state: AlertState;
  count: number;
  raised_at: string;
  last_raised_at: string | null;
  acknowledged_at: string | null;
  acknowledged_by: string | null;
  attended_at: string | null;
  attended_by: string | null;
  resolved_at: string | null;
  resolved_by: string | null;
  disposition: Disposition | null;
  note: string | null;
  overdue: boolean;
  shelved: boolean;
}

export interface Page<T> {
  items: T[];
  next: string | null;
}

export interface ReadingPoint {
  t: string;
  count_avg: number | null;
  count_max: number | null;
  staff_avg: number | null;
  staff_max: number | null;
  battery_min: number | null;
  presence_share: number | null;
  n: number | null;
}

export interface Readings {
  device_id: string;
  bucket: string;
  points: ReadingPoint[];
}

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

// Live websocket messages (docs/api.md "Live websocket").
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
  present: number | null;
  staff: number | null;
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
