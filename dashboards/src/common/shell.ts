// What both pages share: the top bar (title, connection, language, sign-out) and sign-in.
import { ApiError, config, login, logout, me, token, whenUnauthorized } from "./api";
import { h, labelled, replace } from "./dom";
import { healthBanner } from "./health";
import { applyStatic, type Key, setDefaultLanguage, t, toggleLanguage } from "./i18n";
import type { ConnectionState } from "./live";
import type { Me, PublicConfig } from "./types";

export interface Shell {
  config: PublicConfig;
  me: Me;
  main: HTMLElement;
  setConnection: (state: ConnectionState) => void;
}

// What the top bar says of the live connection, for each state it can be in.
const CONNECTION_WORDS: Record<ConnectionState, Key> = {
  connecting: "conn.connecting",
  live: "conn.live",
  partial: "conn.partial",
  lost: "conn.lost",
  signed_out: "conn.signedOut",
};

/** Build the top bar, sign in if needed, then hand the page its main area. */
export async function startShell(titleKey: Key, onSignedIn: (shell: Shell) => void): Promise<void> {
  const root = document.getElementById("app");
  if (root === null) {
    throw new Error("no #app element");
  }
  const settings = await config();
  setDefaultLanguage(settings.default_language);
  const connection = h("span", {
    class: "connection",
    "data-testid": "connection-status",
    "data-state": "connecting",
  });
  const who = h("span", { class: "who", "data-testid": "signed-in-as" });
  const signOut = h("button", {
    class: "link",
    type: "button",
    "data-i18n": "logout",
    "data-testid": "logout",
    hidden: true,
  });
  const header = h(
    "header",
    { class: "topbar" },
    h("h1", { "data-i18n": titleKey, "data-testid": "page-title" }),
    connection,
    h("span", { class: "spacer" }),
    who,
    h("button", {
      class: "lang",
      type: "button",
      "data-i18n": "lang.toggle",
      "data-testid": "lang-toggle",
      onclick: () => toggleLanguage(),
    }),
    signOut,
  );
  const main = h("main", { class: "main", "data-testid": "main" });
  replace(root, header, main);

  let state: ConnectionState = "connecting";
  const showConnection = (next: ConnectionState): void => {
    state = next;
    connection.dataset.state = next;
    const key = CONNECTION_WORDS[next];
    connection.dataset.i18n = key;
    connection.textContent = t(key);
  };
  showConnection(state);

  const signedIn = async (): Promise<void> => {
    let account: Me;
    try {
      account = await me();
    } catch {
      showLogin(main, () => void signedIn());
      return;
    }
    who.textContent = account.display_name || account.username;
    signOut.hidden = false;
    if (account.role === "admin" && !header.nextElementSibling?.classList.contains("hub-health")) {
      header.after(healthBanner());
    }
    onSignedIn({ config: settings, me: account, main, setConnection: showConnection });
  };

  signOut.addEventListener("click", () => {
    void logout().then(() => location.reload());
  });
  // A token that lapses mid-session: back to the sign-in form, the page reloads after.
  whenUnauthorized(() => location.reload());
  applyStatic(document);
  if (token() === null) {
    showLogin(main, () => void signedIn());
  } else {
    await signedIn();
  }
}

function showLogin(main: HTMLElement, done: () => void): void {
  const username = h("input", {
    name: "username",
    autocomplete: "username",
    required: true,
    "data-testid": "login-username",
  });
  const password = h("input", {
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
    "data-testid": "login-password",
  });
  const error = h("p", { class: "error", role: "alert", "data-testid": "login-error" });
  const submit = h("button", { type: "submit", "data-i18n": "login.submit", "data-testid": "login-submit" });
  const form = h(
    "form",
    { class: "login", "data-testid": "login-form" },
    h("h2", { "data-i18n": "login.title" }),
    labelled("login.username", username),
    labelled("login.password", password),
    error,
    submit,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit.disabled = true;
    error.textContent = "";
    login(username.value.trim(), password.value)
      .then(() => {
        main.replaceChildren();
        done();
      })
      .catch((exc: unknown) => {
        submit.disabled = false;
        error.textContent =
          exc instanceof ApiError && exc.status === 401
            ? t("login.failed")
            : exc instanceof ApiError && exc.status === 429 && exc.retryAfter !== null
              ? t("login.limited", { seconds: exc.retryAfter })
              : t("login.error", { message: errorText(exc) });
      });
  });
  replace(main, form);
  applyStatic(form);
  username.focus();
}

/** A failure as a sentence in the current language. */
export function errorText(exc: unknown): string {
  if (exc instanceof ApiError) {
    return exc.status === 0 ? t("error.network") : exc.message || t("error.http", { status: exc.status });
  }
  return String(exc);
}
