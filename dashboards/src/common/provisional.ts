// An alert the hub decided while it could not reach its database (`alert_provisional`,
// SPEC §8) has no id yet: the screens show it until the stored alert of the same call
// arrives as an ordinary `alert` message (or is in a snapshot).
import type { Alert, AlertProvisionalMessage } from "./types";

type Call = Pick<Alert | AlertProvisionalMessage, "facility_id" | "zone_id" | "device_id" | "kind">;

/** The call an alert or a provisional alert is about: its facility, device (else zone) and kind. */
export function callKey(call: Call): string {
  return [call.facility_id, call.device_id ?? call.zone_id ?? "", call.kind].join("\u0000");
}

export interface ShownCall {
  call: AlertProvisionalMessage;
  element: HTMLElement;
}

/** The provisional calls a page shows, one element each, until their stored alert comes. */
export class ProvisionalCalls {
  private readonly shown = new Map<string, ShownCall>();

  get size(): number {
    return this.shown.size;
  }

  /** The facilities with a call shown. */
  facilities(): Set<string> {
    return new Set([...this.shown.values()].map(({ call }) => call.facility_id));
  }

  /** The calls shown, oldest first. */
  entries(): ShownCall[] {
    return [...this.shown.values()];
  }

  /**
   * `call`'s entry, now holding `call` (a repeat press updates it); `added` when it is new,
   * with the element `make` built, for the page to put in place.
   */
  show(call: AlertProvisionalMessage, make: () => HTMLElement): { entry: ShownCall; added: boolean } {
    const key = callKey(call);
    const known = this.shown.get(key);
    if (known !== undefined) {
      known.call = call;
      return { entry: known, added: false };
    }
    const entry = { call, element: make() };
    this.shown.set(key, entry);
    return { entry, added: true };
  }

  /** The stored alert of a call has come: its element leaves the page; true if there was one. */
  settle(alert: Alert): boolean {
    const key = callKey(alert);
    const known = this.shown.get(key);
    if (known === undefined) {
      return false;
    }
    known.element.remove();
    this.shown.delete(key);
    return true;
  }
}
