// The HTTP API v1 client: the token lives in sessionStorage (gone when the tab closes).
import type { LoginOut, Me, PublicConfig } from "./types";

const TOKEN_KEY = "carehub.token";
export const API = "/api/v1";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    // Seconds until the hub takes the request again (429's Retry-After), if it said.
    readonly retryAfter: number | null = null,
  ) {
    super(message);
  }
}

export function token(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function forgetToken(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

let onUnauthorized: () => void = () => undefined;

/** What to do when the hub says the token is no longer good (show the sign-in form). */
export function whenUnauthorized(handler: () => void): void {
  onUnauthorized = handler;
}

async function send(path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  const current = token();
  if (current !== null) {
    headers.set("Authorization", `Bearer ${current}`);
  }
  if (init.body !== undefined) {
    headers.set("Content-Type", "application/json");
  }
  let response: Response;
  try {
    response = await fetch(`${API}${path}`, { ...init, headers });
  } catch {
    throw new ApiError(0, "network", "network");
  }
  if (!response.ok) {
    let code = "http";
    let message = `HTTP ${response.status}`;
    try {
      const body = (await response.json()) as { error?: string; message?: string };
      code = body.error ?? code;
      message = body.message ?? message;
    } catch {
      // Not JSON (a proxy's page): the status says enough.
    }
    if (response.status === 401 && !path.startsWith("/auth/login")) {
      forgetToken();
      onUnauthorized();
    }
    const retryAfter = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
    throw new ApiError(response.status, code, message, Number.isNaN(retryAfter) ? null : retryAfter);
  }
  return response;
}

export async function getJson<T>(path: string): Promise<T> {
  const response = await send(path);
  return (await response.json()) as T;
}

export async function postJson<T>(path: string, body: unknown): Promise<T> {
  const response = await send(path, { method: "POST", body: JSON.stringify(body) });
  return (await response.json()) as T;
}

export async function getBlob(path: string): Promise<Blob> {
  const response = await send(path);
  return response.blob();
}

export async function login(username: string, password: string): Promise<LoginOut> {
  const answer = await postJson<LoginOut>("/auth/login", { username, password });
  sessionStorage.setItem(TOKEN_KEY, answer.token);
  return answer;
}

export async function logout(): Promise<void> {
  try {
    await send("/auth/logout", { method: "POST" });
  } catch {
    // Signed out locally whatever the hub says.
  }
  forgetToken();
}

export function me(): Promise<Me> {
  return getJson<Me>("/auth/me");
}

export async function config(): Promise<PublicConfig> {
  try {
    return await getJson<PublicConfig>("/config");
  } catch {
    return { tile_url: null, map_center: [27.9955, 120.6372], default_language: "zh-CN" };
  }
}
