// Exports for the supervision file: a period's KPIs as CSV (GET /kpis.csv), and the
// monthly supervision report as PDF or XLSX (GET /reports/monthly), in the screen's language.
import { getBlob } from "../common/api";
import { h, labelled } from "../common/dom";
import { dateInput, localIso } from "../common/format";
import { language, t, type Key } from "../common/i18n";
import { errorText } from "../common/shell";

type Scope = () => URLSearchParams | null;

/** The CSV export and the monthly report of `scope`; `picker`, when given, chooses it. */
export function exportForm(scope: Scope, picker: HTMLElement | null = null): HTMLElement {
  return h(
    "div",
    { class: "exports" },
    picker === null ? null : h("div", { class: "export export-scope" }, picker),
    csvForm(scope),
    reportForm(scope),
  );
}

function csvForm(scope: Scope): HTMLElement {
  const today = new Date();
  const from = h("input", {
    type: "date",
    value: dateInput(new Date(today.getFullYear(), today.getMonth(), 1)),
    "data-testid": "export-from",
  });
  const to = h("input", { type: "date", value: dateInput(today), "data-testid": "export-to" });
  const button = h("button", { type: "submit", "data-i18n": "export.button", "data-testid": "export-csv" });
  return downloadForm("export.title", [labelled("export.from", from), labelled("export.to", to)], button, "export-error", () => {
    const query = scope();
    if (query === null || from.value === "" || to.value === "") {
      return null;
    }
    const start = new Date(`${from.value}T00:00:00`);
    // The end day is included: the period runs to the next midnight.
    const end = new Date(`${to.value}T00:00:00`);
    end.setDate(end.getDate() + 1);
    query.set("from", localIso(start));
    query.set("to", localIso(end));
    return { path: `/kpis.csv?${query.toString()}`, name: `carehub-kpis-${from.value}-${to.value}.csv` };
  });
}

function lastMonth(): string {
  const today = new Date();
  const first = new Date(today.getFullYear(), today.getMonth() - 1, 1);
  return dateInput(first).slice(0, 7);
}

function reportForm(scope: Scope): HTMLElement {
  const month = h("input", {
    type: "month",
    value: lastMonth(),
    max: dateInput(new Date()).slice(0, 7),
    required: true,
    "data-testid": "report-month",
  });
  const format = h(
    "select",
    { "data-testid": "report-format" },
    h("option", { value: "pdf" }, "PDF"),
    h("option", { value: "xlsx" }, "XLSX"),
  );
  const button = h("button", { type: "submit", "data-i18n": "report.button", "data-testid": "report-download" });
  return downloadForm("report.title", [labelled("report.month", month), labelled("report.format", format)], button, "report-error", () => {
    const query = scope();
    if (query === null || month.value === "") {
      return null;
    }
    query.set("month", month.value);
    query.set("format", format.value);
    query.set("lang", language() === "en" ? "en" : "zh");
    return { path: `/reports/monthly?${query.toString()}`, name: `carehub-report-${month.value}.${format.value}` };
  });
}

// A form whose submit downloads a file; the hub's message shows beside it when it refuses.
function downloadForm(
  title: Key,
  controls: HTMLElement[],
  button: HTMLButtonElement,
  errorId: string,
  request: () => { path: string; name: string } | null,
): HTMLElement {
  const error = h("span", { class: "error", "data-testid": errorId });
  const form = h("form", { class: "export" }, h("span", { class: "export-title", "data-i18n": title }), ...controls, button, error);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const wanted = request();
    if (wanted === null) {
      return;
    }
    error.textContent = "";
    button.disabled = true;
    getBlob(wanted.path)
      .then((blob) => {
        const url = URL.createObjectURL(blob);
        const link = h("a", { href: url, download: wanted.name });
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
