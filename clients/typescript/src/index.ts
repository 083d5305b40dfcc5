// A client of Notify's API for TypeScript producers (Node 20+ and browsers): the request
// and answer types are generated from the API's committed OpenAPI document
// (`src/schema.d.ts`, `npm run generate`), so they cannot drift from the server.
//
// - `send(notification)` gives each request an idempotency key unless it has one, and
//   retries 429, 503 and connection errors after `Retry-After` (up to a minute; else a
//   jittered exponential backoff), a bounded number of times.
// - Any other refusal throws a `NotifyError` with the API's problem: `status`, `code` and
//   the fields it names.
// - `notify()` from the task's context is `@notify/client/context` (Node: AsyncLocalStorage).

import type { components } from "./schema.js";

export type Schemas = components["schemas"];
export type NewNotification = Schemas["NewNotification"];
export type AcceptedNotification = Schemas["AcceptedNotification"];
export type NotificationView = Schemas["NotificationView"];
export type Problem = Schemas["Problem"];
export type FieldError = Schemas["FieldError"];
export type Priority = Schemas["Priority"];
export type Severity = Schemas["Severity"];
export type Audience = Schemas["Audience"];

/** The API refused the request (or still refused it after the retries). */
export class NotifyError extends Error {
  readonly status: number;
  readonly code: string;
  readonly fieldErrors: FieldError[];
  readonly problem: Problem;

  constructor(problem: Problem) {
    super(`${problem.status} ${problem.code}: ${problem.detail}`);
    this.name = "NotifyError";
    this.status = problem.status;
    this.code = problem.code;
    this.fieldErrors = problem.errors;
    this.problem = problem;
  }
}

export interface Retries {
  /** Tries in all, the first included (default 5). */
  attempts: number;
  /** The first backoff in ms (default 200); each next one doubles, up to `maxDelayMs`. */
  firstDelayMs: number;
  maxDelayMs: number;
}

export interface ClientOptions {
  /** `https://notify.example.com` */
  baseUrl: string;
  /** The tenant's API key, `nk_...`. */
  apiKey: string;
  retries?: Partial<Retries>;
  /** Another `fetch` (tests, instrumentation). */
  fetch?: typeof fetch;
}

const DEFAULT_RETRIES: Retries = { attempts: 5, firstDelayMs: 200, maxDelayMs: 10_000 };
/** The longest `Retry-After` waited for: the API's own are seconds; a longer one is not waited out inside a call. */
export const MAX_RETRY_AFTER_MS = 60_000;

export class NotifyClient {
  readonly baseUrl: string;
  readonly apiKey: string;
  readonly retries: Retries;
  private readonly fetch: typeof fetch;

  constructor(options: ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.apiKey = options.apiKey;
    this.retries = { ...DEFAULT_RETRIES, ...options.retries };
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** The same client with another tenant's key. */
  withApiKey(apiKey: string): NotifyClient {
    return new NotifyClient({ baseUrl: this.baseUrl, apiKey, retries: this.retries, fetch: this.fetch });
  }

  /** Sends `notification`; its idempotency key, or a new one, makes every retry the same request. */
  async send(notification: NewNotification): Promise<AcceptedNotification> {
    const key = notification.idempotency_key ?? crypto.randomUUID();
    return (await this.call("POST", "/v1/notifications", notification, { "Idempotency-Key": key })) as AcceptedNotification;
  }

  /** The notification, its delivery counts, first deliveries and events. */
  async get(id: string): Promise<NotificationView> {
    return (await this.call("GET", `/v1/notifications/${encodeURIComponent(id)}`)) as NotificationView;
  }

  private async call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<unknown> {
    const init: RequestInit = {
      method,
      headers: {
        Authorization: `Bearer ${this.apiKey}`,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    };
    for (let attempt = 1; ; attempt++) {
      let wait: number;
      try {
        const response = await this.fetch(`${this.baseUrl}${path}`, init);
        if (response.ok) {
          return await response.json();
        }
        const problem = await readProblem(response);
        if ((response.status !== 429 && response.status !== 503) || attempt >= this.retries.attempts) {
          throw new NotifyError(problem);
        }
        const after = retryAfterMs(response.headers);
        wait = after === undefined ? backoffMs(this.retries, attempt) : Math.min(after, MAX_RETRY_AFTER_MS);
      } catch (error) {
        // A request that may have reached the API is sent again: its key makes the
        // second the first's answer.
        if (error instanceof NotifyError || attempt >= this.retries.attempts) {
          throw error;
        }
        wait = backoffMs(this.retries, attempt);
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}

/** The API's problem, or one that says what came instead. */
async function readProblem(response: Response): Promise<Problem> {
  const text = await response.text();
  try {
    const problem = JSON.parse(text) as Problem;
    if (typeof problem.code === "string") {
      return { ...problem, errors: problem.errors ?? [] };
    }
  } catch {
    // not JSON: described below
  }
  return { type: "about:blank", title: response.statusText, status: response.status, detail: text.slice(0, 200), code: "unexpected_answer", errors: [] };
}

/** `Retry-After` in seconds (the form the API sends), in ms. */
export function retryAfterMs(headers: Headers): number | undefined {
  const value = headers.get("Retry-After");
  const seconds = value === null ? NaN : Number(value.trim());
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : undefined;
}

/** Exponential, capped, with equal jitter (half fixed, half random), so clients refused together come back apart. */
export function backoffMs(retries: Retries, attempt: number): number {
  const ceiling = Math.min(retries.firstDelayMs * 2 ** Math.min(attempt - 1, 16), retries.maxDelayMs);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}
