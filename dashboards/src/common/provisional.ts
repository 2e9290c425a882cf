// An alert the hub decided while it could not reach its database (`alert_provisional`,
// SPEC §8) has no id yet: the screens show it until the stored alert of the same call
// arrives as an ordinary `alert` message (or is in a snapshot).
import type { Alert, AlertProvisionalMessage } from "./types";

type Call = Pick<Alert | AlertProvisionalMessage, "facility_id" | "zone_id" | "device_id" | "kind">;

/** The call an alert or a provisional alert is about: its facility, device (else zone) and kind. */
export function callKey(call: Call): string {
  return [call.facility_id, call.device_id ?? call.zone_id ?? "", call.kind].join("\u0000");
}
