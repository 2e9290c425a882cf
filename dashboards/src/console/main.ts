// The staff console, phone-sized: the facility's open alerts as large cards, new ones with
// a tone and a vibration; one button to take over, one to say "on site", one to resolve
// with a disposition. Always says whether it is connected.
import "../common/base.css";
import "./console.css";

import { postJson } from "../common/api";
import { h, replace } from "../common/dom";
import { age, clock } from "../common/format";
import { applyStatic, label, onLanguageChange, t } from "../common/i18n";
import { LiveConnection, type PageMessage, unknownMessage } from "../common/live";
import { ProvisionalCalls, type ShownCall } from "../common/provisional";
import { errorText, type Shell, startShell } from "../common/shell";
import type { Alert, AlertProvisionalMessage, Device, Disposition, Zone } from "../common/types";
import { audioReady, playAlertTone, unlockAudio } from "./sound";

const DISPOSITIONS: Disposition[] = ["real", "false_alarm", "test", "other"];

interface Card {
  alert: Alert;
  element: HTMLElement;
  age: HTMLElement;
  raisedMs: number;
}

class StaffConsole {
  private readonly cards = new Map<string, Card>();
  // Alerts decided while the hub's database was unreachable: no id, so nothing to take
  // over yet, but the tone rings and the card says where to go.
  private readonly provisional = new ProvisionalCalls();
  private readonly zones = new Map<string, Zone>();
  private readonly devices = new Map<string, Device>();
  private readonly list = h("ol", { class: "cards", "data-testid": "console-alerts" });
  private readonly empty = h("p", { class: "empty", "data-i18n": "console.empty", "data-testid": "console-empty" });
  private readonly soundButton = h("button", {
    type: "button",
    class: "sound",
    "data-i18n": "console.sound",
    "data-testid": "console-sound",
  });
  private readonly facilityName = h("p", { class: "facility", "data-testid": "console-facility" });
  private snapshotSeen = false;

  constructor(private readonly shell: Shell) {
    // Any tap unlocks the tone (browsers refuse audio before one).
    document.addEventListener("pointerdown", () => this.unlock(), { capture: true });
    this.soundButton.addEventListener("click", () => this.unlock());
    const layout = h("div", { class: "console" }, this.facilityName, this.soundButton, this.empty, this.list);
    shell.main.replaceChildren(layout);
    applyStatic(layout);
    this.unlock();
    window.setInterval(() => this.tick(), 1000);
    onLanguageChange(() => {
      for (const card of this.cards.values()) {
        this.paint(card);
      }
      for (const card of this.provisional.entries()) {
        this.paintProvisional(card);
      }
      this.tick();
    });
  }

  start(): void {
    new LiveConnection({
      token: () => sessionStorage.getItem("carehub.token"),
      onMessage: (message) => this.handle(message),
      onState: (state) => {
        this.shell.setConnection(state);
        document.body.dataset.connection = state;
      },
    }).start();
  }

  private unlock(): void {
    unlockAudio();
    // resume() settles asynchronously; look again shortly.
    window.setTimeout(() => {
      this.soundButton.hidden = audioReady();
    }, 200);
  }

  private handle(message: PageMessage): void {
    switch (message.type) {
      case "snapshot": {
        this.zones.clear();
        for (const zones of Object.values(message.zones)) {
          for (const zone of zones) {
            this.zones.set(zone.zone_id, zone);
          }
        }
        for (const device of message.devices ?? []) {
          this.devices.set(device.id, device);
        }
        const names = message.facilities.map((facility) => facility.name);
        this.facilityName.textContent = names.join("、");
        this.list.replaceChildren();
        this.cards.clear();
        const sorted = [...message.alerts].sort((a, b) => Date.parse(b.raised_at) - Date.parse(a.raised_at));
        for (const alert of sorted) {
          this.settle(alert);
          this.list.appendChild(this.build(alert).element);
        }
        // Still not stored (the hub is replaying what it spooled): they stay on top.
        for (const card of this.provisional.entries()) {
          this.list.insertBefore(card.element, this.list.firstChild);
        }
        // Alerts raised while we were away are news too, but only once per page.
        if (this.snapshotSeen && sorted.some((alert) => alert.state === "active")) {
          playAlertTone();
        }
        this.snapshotSeen = true;
        this.updateEmpty();
        document.body.dataset.live = "true";
        break;
      }
      case "alert": {
        // The stored alert of a call shown provisionally is not news: its tone has rung.
        const wasProvisional = this.settle(message.alert);
        this.apply(message.alert, message.action === "raise" || message.action === "repeat", wasProvisional);
        break;
      }
      case "alert_provisional":
        this.showProvisional(message);
        break;
      case "device_status":
        this.devices.set(message.device.id, message.device);
        break;
      case "alert_group":
      case "facility_status":
      case "zone_count":
        // Facility-level: the regulator's screen shows them.
        break;
      default:
        unknownMessage(message);
    }
  }

  private showProvisional(call: AlertProvisionalMessage): void {
    const { entry, added } = this.provisional.show(call, () =>
      h("li", {
        class: "card provisional",
        "data-testid": "console-provisional",
        "data-state": "active",
        "data-priority": call.priority,
      }),
    );
    if (added) {
      this.list.insertBefore(entry.element, this.list.firstChild);
      this.updateEmpty();
    }
    this.paintProvisional(entry);
    this.flash(entry.element);
  }

  private paintProvisional(card: ShownCall): void {
    const { call, element } = card;
    const zone = call.zone_id === null ? undefined : this.zones.get(call.zone_id);
    const device = call.device_id === null ? "" : ` · ${call.device_id}`;
    replace(
      element,
      h("div", { class: "card-head" }, h("span", { class: "kind", "data-testid": "console-kind" }, label("kind", call.kind))),
      h("p", { class: "where" }, `${zone?.name ?? call.zone_id ?? t("zone.none")}${device} · ${clock(call.at)}`),
      h("p", { class: "status", "data-testid": "console-provisional-status" }, t("console.provisional")),
    );
  }

  /** The stored alert of a call shown provisionally has come: its card goes. */
  private settle(alert: Alert): boolean {
    const settled = this.provisional.settle(alert);
    if (settled) {
      this.updateEmpty();
    }
    return settled;
  }

  /** Show an alert's new state; `quiet`: its tone has rung already (it was provisional). */
  private apply(alert: Alert, isNews: boolean, quiet = false): void {
    const card = this.cards.get(alert.id);
    if (alert.state === "resolved") {
      card?.element.remove();
      this.cards.delete(alert.id);
      this.updateEmpty();
      return;
    }
    if (card !== undefined) {
      card.alert = alert;
      this.paint(card);
      if (isNews && !quiet && alert.state === "active") {
        this.announce(card);
      }
      return;
    }
    const fresh = this.build(alert);
    this.list.insertBefore(fresh.element, this.list.firstChild);
    this.updateEmpty();
    if (alert.state === "active" && !quiet) {
      this.announce(fresh);
    }
  }

  private announce(card: Card): void {
    this.flash(card.element);
    document.body.dataset.lastAlert = card.alert.id;
  }

  private flash(element: HTMLElement): void {
    playAlertTone();
    element.classList.remove("flash");
    // Restart the flash animation.
    void element.offsetWidth;
    element.classList.add("flash");
  }

  private build(alert: Alert): Card {
    const element = h("li", { class: "card", "data-testid": "console-alert", "data-alert-id": alert.id });
    const card: Card = {
      alert,
      element,
      age: h("span", { class: "age", "data-testid": "console-age" }),
      raisedMs: Date.parse(alert.raised_at),
    };
    this.cards.set(alert.id, card);
    this.paint(card);
    return card;
  }

  /** Draw a card for its alert's current state. */
  private paint(card: Card): void {
    const { alert, element } = card;
    element.dataset.state = alert.state;
    element.dataset.priority = alert.priority;
    const zone = alert.zone_id === null ? undefined : this.zones.get(alert.zone_id);
    const who = (name: string | null): string =>
      name === null ? "—" : name === this.shell.me.username ? t("console.mine") : name;
    const status = h("p", { class: "status", "data-testid": "console-taken-by" });
    if (alert.state === "acknowledged") {
      status.textContent = t("console.takenBy", { who: who(alert.acknowledged_by) });
    } else if (alert.state === "attended") {
      status.textContent = `${t("console.takenBy", { who: who(alert.acknowledged_by) })} · ${t("console.attendedBy", { who: who(alert.attended_by) })}`;
    } else {
      status.textContent = label("alert", alert.state);
    }
    const error = h("p", { class: "error", "data-testid": "console-error" });
    const actions = h("div", { class: "actions" });
    const act = (path: string, body: object): void => {
      for (const button of actions.querySelectorAll("button")) {
        button.disabled = true;
      }
      postJson<Alert>(`/alerts/${encodeURIComponent(alert.id)}/${path}`, body)
        .then((updated) => this.apply(updated, false))
        .catch((exc: unknown) => {
          error.textContent = t("console.failed", { message: errorText(exc) });
          for (const button of actions.querySelectorAll("button")) {
            button.disabled = false;
          }
        });
    };
    if (alert.state === "active") {
      actions.appendChild(
        h("button", { type: "button", class: "big ack", "data-testid": "console-ack", onclick: () => act("ack", {}) }, t("console.ack")),
      );
    } else if (alert.state === "acknowledged") {
      actions.appendChild(
        h("button", { type: "button", class: "big attend", "data-testid": "console-attend", onclick: () => act("attend", {}) }, t("console.attend")),
      );
    }
    const dispositions = h(
      "div",
      { class: "dispositions", hidden: true, "data-testid": "console-dispositions" },
      h("span", {}, t("console.resolveAs")),
      ...DISPOSITIONS.map((disposition) =>
        h(
          "button",
          {
            type: "button",
            "data-testid": `console-resolve-${disposition}`,
            onclick: () => act("resolve", { disposition }),
          },
          label("disp", disposition),
        ),
      ),
      h("button", { type: "button", class: "link", onclick: () => (dispositions.hidden = true) }, t("console.cancel")),
    );
    actions.appendChild(
      h(
        "button",
        {
          type: "button",
          class: "big resolve",
          "data-testid": "console-resolve",
          onclick: () => (dispositions.hidden = !dispositions.hidden),
        },
        t("console.resolve"),
      ),
    );
    const device = alert.device_id === null ? "" : ` · ${alert.device_id}`;
    replace(
      element,
      h(
        "div",
        { class: "card-head" },
        h("span", { class: "kind", "data-testid": "console-kind" }, label("kind", alert.kind)),
        alert.count > 1 ? h("span", { class: "count" }, t("alert.count", { count: alert.count })) : null,
        card.age,
      ),
      h("p", { class: "where" }, `${zone?.name ?? alert.zone_id ?? t("zone.none")}${device} · ${clock(alert.raised_at)}`),
      status,
      actions,
      dispositions,
      error,
    );
    card.age.textContent = age(card.raisedMs, Date.now());
  }

  private tick(): void {
    const now = Date.now();
    for (const card of this.cards.values()) {
      card.age.textContent = age(card.raisedMs, now);
    }
  }

  private updateEmpty(): void {
    this.empty.hidden = this.cards.size + this.provisional.size > 0;
  }
}

void startShell("app.console", (shell) => new StaffConsole(shell).start());
