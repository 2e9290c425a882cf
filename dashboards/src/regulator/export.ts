// Export a period's KPIs as CSV (GET /kpis.csv), for the monthly supervision report.
import { getBlob } from "../common/api";
import { h, labelled } from "../common/dom";
import { dateInput, localIso } from "../common/format";
import { t } from "../common/i18n";
import { errorText } from "../common/shell";

export function exportForm(scope: () => URLSearchParams | null): HTMLElement {
  const today = new Date();
  const from = h("input", {
    type: "date",
    value: dateInput(new Date(today.getFullYear(), today.getMonth(), 1)),
    "data-testid": "export-from",
  });
  const to = h("input", { type: "date", value: dateInput(today), "data-testid": "export-to" });
  const error = h("span", { class: "error", "data-testid": "export-error" });
  const button = h("button", { type: "submit", "data-i18n": "export.button", "data-testid": "export-csv" });
  const form = h(
    "form",
    { class: "export" },
    h("span", { class: "export-title", "data-i18n": "export.title" }),
    labelled("export.from", from),
    labelled("export.to", to),
    button,
    error,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = scope();
    if (query === null || from.value === "" || to.value === "") {
      return;
    }
    const start = new Date(`${from.value}T00:00:00`);
    // The end day is included: the period runs to the next midnight.
    const end = new Date(`${to.value}T00:00:00`);
    end.setDate(end.getDate() + 1);
    query.set("from", localIso(start));
    query.set("to", localIso(end));
    error.textContent = "";
    button.disabled = true;
    getBlob(`/kpis.csv?${query.toString()}`)
      .then((blob) => {
        const url = URL.createObjectURL(blob);
        const link = h("a", { href: url, download: `carehub-kpis-${from.value}-${to.value}.csv` });
        document.body.appendChild(link);
        link.click();
        link.remove();
        window.setTimeout(() => URL.revokeObjectURL(url), 10_000);
      })
      .catch((exc: unknown) => {
        error.textContent = t("export.failed", { message: errorText(exc) });
      })
      .finally(() => {
        button.disabled = false;
      });
  });
  return form;
}
