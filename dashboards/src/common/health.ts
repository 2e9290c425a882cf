// For an admin: what the hub knows it is losing or holding back, from /readyz, under the top
// bar. Messages the broker dropped are gone for good; an operator must hear of it on the
// screen, not only in a log (carehub doctor says what to change).
import { h } from "./dom";
import { type Key, onLanguageChange, t } from "./i18n";

const POLL_MS = 10_000;

interface Readiness {
  mqtt: boolean;
  database: boolean;
  spool_pending_batches: number;
  broker_dropped: { while_watched: number; since_broker_start: number | null; visible: boolean };
}

/** A banner that lists the hub's data-loss and outage problems; hidden when there are none. */
export function healthBanner(): HTMLElement {
  const banner = h("div", { class: "hub-health", role: "alert", "data-testid": "hub-health", hidden: true });
  let last: Readiness | null = null;
  const paint = (): void => {
    const problems: [string, Key, Record<string, number>][] = [];
    if (last !== null) {
      if (last.broker_dropped.while_watched > 0) {
        problems.push(["broker-dropped", "health.brokerDropped", { count: last.broker_dropped.while_watched }]);
      }
      if (!last.database) {
        problems.push(["database", "health.database", { batches: last.spool_pending_batches }]);
      }
      if (!last.mqtt) {
        problems.push(["mqtt", "health.mqtt", {}]);
      }
    }
    banner.replaceChildren(
      ...problems.map(([name, key, values]) => h("p", { "data-problem": name }, t(key, values))),
    );
    banner.hidden = problems.length === 0;
  };
  const poll = async (): Promise<void> => {
    try {
      // 503 still carries the body: that is when it matters most.
      const answer = await fetch("/readyz", { cache: "no-store" });
      last = (await answer.json()) as Readiness;
    } catch {
      // The connection badge already says the hub cannot be reached.
      return;
    }
    paint();
  };
  void poll();
  window.setInterval(() => void poll(), POLL_MS);
  onLanguageChange(paint);
  return banner;
}
