// The public REST API, as every part of the page calls it: the bearer token from sessionStorage (never in a
// URL), the server's one-line error on failure, and one retry of a 503 after its Retry-After.

const TOKEN_KEY = "tav.token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") return body.error;
  } catch (_) {
    // not our JSON error body (a proxy's page): say what the status was
  }
  return `HTTP ${response.status} ${response.statusText}`.trim();
}

export class Api {
  constructor({ onUnauthorized }) {
    this.onUnauthorized = onUnauthorized;
  }

  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  setToken(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  }

  forgetToken() {
    sessionStorage.removeItem(TOKEN_KEY);
  }

  // fetch with the token; a 503 is shown through onBusy(seconds, message) and retried once after Retry-After.
  async request(method, path, { json, form, onBusy } = {}) {
    for (let attempt = 0; ; attempt += 1) {
      const headers = {};
      if (this.token) headers.Authorization = `Bearer ${this.token}`;
      let body;
      if (json !== undefined) {
        headers["Content-Type"] = "application/json";
        body = JSON.stringify(json);
      } else if (form !== undefined) {
        body = form;
      }
      const response = await fetch(path, { method, headers, body });
      if (response.ok) return response;
      const message = await errorMessage(response);
      if (response.status === 401) {
        this.onUnauthorized(message);
      } else if (response.status === 503 && attempt === 0) {
        const wait = Math.min(Number.parseInt(response.headers.get("Retry-After") || "5", 10) || 5, 120);
        if (onBusy) onBusy(wait, message);
        await sleep(wait * 1000);
        continue;
      }
      throw new ApiError(response.status, message);
    }
  }

  async json(method, path, options) {
    return (await this.request(method, path, options)).json();
  }

  // A binary resource (a preview, a result) as an object URL the page may show; the caller revokes it.
  async objectUrl(path) {
    return URL.createObjectURL(await (await this.request("GET", path)).blob());
  }
}
