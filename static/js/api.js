// fetch() for the REST API: the base path, JSON in and out, the access token, and errors in words.

const TOKEN_KEY = "imagegraph.token"; // static/docs.html reads the same key
const BASE = "/api/v1";

export class ApiError extends Error {
  constructor(status, detail, errors = []) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.errors = errors;
  }
}

export function getToken() {
  return localStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

/** A URL the browser fetches by itself (<img src>, WebSocket, download link): it carries `?token=`. */
export function withToken(url) {
  const token = getToken();
  if (!token) return url;
  const parsed = new URL(url, location.href);
  parsed.searchParams.set("token", token);
  return parsed.origin === location.origin ? parsed.pathname + parsed.search : parsed.href;
}

let askForToken = null;
let pendingAsk = null;

/** `ask(message)` resolves to a token or null; called once at a time however many requests got 401. */
export function setTokenPrompt(ask) {
  askForToken = ask;
}

function tokenFromUser(message) {
  pendingAsk ??= askForToken(message).finally(() => {
    pendingAsk = null;
  });
  return pendingAsk;
}

function queryString(query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value === undefined || value === null || value === "") continue;
    for (const item of Array.isArray(value) ? value : [value]) params.append(key, String(item));
  }
  const text = params.toString();
  return text ? `?${text}` : "";
}

async function errorFrom(response) {
  let detail = `${response.status} ${response.statusText}`.trim();
  let errors = [];
  try {
    const body = await response.json();
    if (typeof body?.detail === "string") detail = body.detail;
    if (Array.isArray(body?.errors)) errors = body.errors;
  } catch {
    // Not JSON (a proxy's error page, say): the status line is all we have.
  }
  return new ApiError(response.status, detail, errors);
}

/**
 * request("GET", "/images/", {query: {limit: 50}}) → parsed JSON (null for 204).
 * `body` is sent as JSON; `form` (FormData) as multipart. Throws ApiError with the server's `detail`.
 */
export async function request(method, path, { query, body, form, signal } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = {};
    const token = getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    let payload;
    if (form) payload = form;
    else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const response = await fetch(BASE + path + queryString(query), { method, headers, body: payload, signal });
    if (response.status === 401 && askForToken && attempt < 5) {
      const error = await errorFrom(response);
      const given = await tokenFromUser(token ? error.detail : null);
      if (given) {
        setToken(given);
        continue;
      }
      throw error;
    }
    if (!response.ok) throw await errorFrom(response);
    if (response.status === 204) return null;
    const type = response.headers.get("content-type") ?? "";
    return type.includes("json") ? response.json() : response.text();
  }
}

export const api = {
  get: (path, options) => request("GET", path, options),
  post: (path, body, options) => request("POST", path, { ...options, body }),
  put: (path, body, options) => request("PUT", path, { ...options, body }),
  patch: (path, body, options) => request("PATCH", path, { ...options, body }),
  delete: (path, options) => request("DELETE", path, options),
};
