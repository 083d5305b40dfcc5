// Seed 000's one line: inside a unit of work that `withNotifyContext` gave the tenant, the
// record and the audience, `await notify("Vendor Name is missing", "HIGH")`. Node only
// (AsyncLocalStorage); browsers use `NotifyClient.send`.

import { AsyncLocalStorage } from "node:async_hooks";

import { NotifyClient, NotifyError, type AcceptedNotification, type Audience, type NewNotification, type Severity } from "./index.js";

export interface NotifyContext {
  /** The client to send with; `tenantKey` replaces its key. */
  client?: NotifyClient;
  tenantKey?: string;
  /** The business record the work is about: `data.record_id`, and the correlation id when none is given. */
  recordId?: string;
  correlationId?: string;
  /** Who hears of it; default: the server's classification of its error class or type, else the severity's. */
  audience?: Audience;
  /** Added to every notification's `data`. */
  data?: Record<string, unknown>;
}

export interface NotifyOptions {
  /** The notification type; default `error`. */
  type?: string;
  errorCode?: string;
  /** `validation`, `mapping`, `auth`, `system`, or the tenant's own: the classification maps it to an audience and a priority. */
  errorClass?: string;
}

const storage = new AsyncLocalStorage<NotifyContext>();
let defaultClient: NotifyClient | undefined;

/** The client `notify` uses when the context names none. */
export function configureNotify(client: NotifyClient): void {
  defaultClient = client;
}

/** Runs `fn` with `context` (merged over the enclosing one) for the `notify` calls it makes. */
export function withNotifyContext<T>(context: NotifyContext, fn: () => T): T {
  return storage.run({ ...storage.getStore(), ...context }, fn);
}

/** `CRITICAL`, `HIGH`, ... or the API's own lower case. */
export type SeverityName = Severity | Uppercase<Severity>;

/**
 * Sends `message` as a notification of the context's tenant: type `error` (or the
 * options'), the message as its content on every channel, `severity` (the priority when
 * the classification gives none), the context's record id, correlation id and data. Its
 * audience is the context's; else the server's classification of its error class or type;
 * and when the tenant classified neither, the severity's (high and critical to `support`,
 * else `customer`).
 */
export async function notify(message: string, severity: SeverityName, options: NotifyOptions = {}): Promise<AcceptedNotification> {
  const context = storage.getStore() ?? {};
  let client = context.client ?? defaultClient;
  if (client === undefined) {
    throw new Error("notify() needs a client: withNotifyContext({client}, ...) or configureNotify(client)");
  }
  if (context.tenantKey !== undefined) {
    client = client.withApiKey(context.tenantKey);
  }
  const level = severity.toLowerCase() as Severity;
  const notification: NewNotification = {
    type: options.type ?? "error",
    audience: context.audience,
    data: { ...context.data, message, ...(context.recordId === undefined ? {} : { record_id: context.recordId }) },
    content: { subject: message, text: message, title: message, body: message },
    severity: level,
    error_code: options.errorCode,
    error_class: options.errorClass,
    correlation_id: context.correlationId ?? context.recordId,
  };
  try {
    return await client.send(notification);
  } catch (error) {
    const unclassified =
      error instanceof NotifyError &&
      notification.audience === undefined &&
      error.code === "validation_failed" &&
      error.fieldErrors.length === 1 &&
      error.fieldErrors[0].field === "to";
    if (!unclassified) {
      throw error;
    }
    const audience: Audience = level === "high" || level === "critical" ? "support" : "customer";
    return client.send({ ...notification, audience });
  }
}
