// Times, ages and numbers as a person reads them.
import { language, t } from "./i18n";

/** Elapsed time since `since` (ms epoch) at `now`: "42 秒", "3 分 05 秒", "2 小时 07 分". */
export function age(since: number, now: number): string {
  const total = Math.max(0, Math.floor((now - since) / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  if (hours > 0) {
    return t("time.hours", { h: hours, m: pad(minutes) });
  }
  if (minutes > 0) {
    return t("time.minutes", { m: minutes, s: pad(seconds) });
  }
  return t("time.seconds", { s: seconds });
}

function pad(value: number): string {
  return value.toString().padStart(2, "0");
}

export function clock(iso: string | null): string {
  if (iso === null) {
    return "—";
  }
  return new Date(iso).toLocaleTimeString(language(), { hour12: false });
}

export function dateTime(iso: string | null): string {
  if (iso === null) {
    return "—";
  }
  return new Date(iso).toLocaleString(language(), { hour12: false });
}

export function percent(share: number | null): string {
  return share === null ? "—" : `${(share * 100).toFixed(1)}%`;
}

/** A local time as RFC 3339 with the browser's UTC offset (the API wants an offset). */
export function localIso(date: Date): string {
  const offset = -date.getTimezoneOffset();
  const sign = offset >= 0 ? "+" : "-";
  const abs = Math.abs(offset);
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
    `T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}` +
    `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`
  );
}

export function startOfToday(now = new Date()): Date {
  return new Date(now.getFullYear(), now.getMonth(), now.getDate());
}

/** A date input's value (YYYY-MM-DD) of a local date. */
export function dateInput(date: Date): string {
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}
