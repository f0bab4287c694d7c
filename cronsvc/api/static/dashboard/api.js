// The API client: every call the dashboard makes goes through `call`.
//
// A token, once given, is kept in this tab's session storage and sent as
// `Authorization: Bearer <token>`. A 401 asks for a (new) token through the
// prompt the app registers, then repeats the call; several calls refused at
// once share one prompt.

const TOKEN_KEY = "cronsvc.apiToken";
const MAX_PROMPTS = 3;

let prompt = null;
let pendingPrompt = null;

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// `ask(reason)` resolves to the token entered, or null when the person declines.
export function onTokenNeeded(ask) {
  prompt = ask;
}

export class ApiError extends Error {
  constructor(status, problem) {
    const text = problem && (problem.detail || problem.title);
    super(text || `the service answered ${status}`);
    this.status = status;
    this.problem = problem || {};
  }

  // Field errors of a problem+json answer: [{field, message}].
  get fieldErrors() {
    return Array.isArray(this.problem.errors) ? this.problem.errors : [];
  }
}

async function parse(response) {
  const type = response.headers.get("Content-Type") || "";
  if (response.status === 204) return null;
  if (type.includes("json")) {
    try {
      return await response.json();
    } catch {
      return null;
    }
  }
  const text = await response.text();
  return text ? { detail: text } : null;
}

// The target of a `Link: <...>; rel="next"` header (RFC 8288), or null.
export function nextLink(header) {
  if (!header) return null;
  for (const part of header.split(",")) {
    const match = part.match(/<([^>]*)>\s*;(.*)$/);
    if (match && /\brel="?([^"]*\s)?next(\s[^"]*)?"?/.test(match[2])) return match[1];
  }
  return null;
}

function askForToken(reason) {
  if (!prompt) return Promise.resolve(null);
  pendingPrompt ??= prompt(reason).finally(() => {
    pendingPrompt = null;
  });
  return pendingPrompt;
}

// Calls the API. Resolves to {data, next} (next: the next page's URL, if any);
// rejects with ApiError for any answer that is not 2xx.
export async function call(method, path, body, { signal } = {}) {
  for (let prompts = 0; ; prompts++) {
    const headers = { Accept: "application/json" };
    const sent = token();
    if (sent) headers.Authorization = `Bearer ${sent}`;
    const init = { method, headers, signal, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const data = await parse(response);
    if (response.status === 401 && prompts < MAX_PROMPTS) {
      const reason = sent
        ? "The service refused this token. Enter another one."
        : "This service needs an API token.";
      // Another call may have stored a token while this one was in flight.
      if (token() && token() !== sent) continue;
      const entered = await askForToken(reason);
      if (entered) {
        setToken(entered);
        continue;
      }
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return { data, next: nextLink(response.headers.get("Link")) };
  }
}

export const api = {
  get: (path, options) => call("GET", path, undefined, options),
  post: (path, body, options) => call("POST", path, body, options),
  put: (path, body, options) => call("PUT", path, body, options),
  delete: (path, options) => call("DELETE", path, undefined, options),
};
