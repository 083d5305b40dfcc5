// The TypeScript client against a running API, which tests/it/typescript_client.rs starts
// (and sets up: the support and customer topics, a classification) before it runs this
// with `node --test`: NOTIFY_URL and NOTIFY_API_KEY name it, NOTIFY_LIMITED_URL and
// NOTIFY_LIMITED_API_KEY an API that takes one notification a second.

import assert from "node:assert/strict";
import { test } from "node:test";

import { NotifyClient, NotifyError } from "../dist/index.js";
import { notify, withNotifyContext } from "../dist/context.js";

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} is set by tests/it/typescript_client.rs`);
  return value;
};
const client = () => new NotifyClient({ baseUrl: env("NOTIFY_URL"), apiKey: env("NOTIFY_API_KEY") });
const email = (to, extra = {}) => ({
  type: "order.shipped",
  to: [{ email: to }],
  content: { subject: "Shipped", text: "On its way" },
  ...extra,
});

test("a key of the caller's answers the first request again", async () => {
  const first = await client().send(email("a@example.com", { idempotency_key: "ts-order-7" }));
  const again = await client().send(email("a@example.com", { idempotency_key: "ts-order-7" }));
  assert.equal(again.id, first.id);
  assert.equal(first.deliveries[0].recipient, "a@example.com");
});

test("a refusal is a NotifyError naming the field", async () => {
  await assert.rejects(client().send(email("not an address")), (error) => {
    assert.ok(error instanceof NotifyError);
    assert.equal(error.status, 422);
    assert.equal(error.code, "validation_failed");
    assert.equal(error.fieldErrors[0].field, "to[0].email");
    return true;
  });
  const stranger = new NotifyClient({ baseUrl: env("NOTIFY_URL"), apiKey: "nk_unknown", retries: { attempts: 1 } });
  await assert.rejects(stranger.send(email("a@example.com")), (error) => error.status === 401);
});

test("429 is retried after Retry-After, each notification accepted once", async () => {
  const statuses = [];
  const counting = async (url, init) => {
    const response = await fetch(url, init);
    statuses.push(response.status);
    return response;
  };
  const options = { baseUrl: env("NOTIFY_LIMITED_URL"), apiKey: env("NOTIFY_LIMITED_API_KEY") };
  const limited = new NotifyClient({ ...options, fetch: counting });
  const ids = [];
  for (const to of ["u0@example.com", "u1@example.com", "u2@example.com"]) {
    ids.push((await limited.send(email(to))).id);
  }
  assert.equal(new Set(ids).size, 3);
  assert.ok(statuses.includes(429), `one a second: some were refused first (${statuses})`);
  const listed = await fetch(`${options.baseUrl}/v1/notifications`, { headers: { Authorization: `Bearer ${options.apiKey}` } });
  assert.equal((await listed.json()).items.length, 3, "each written once");
});

test("notify() turns a business error into a notification of the context", async () => {
  await assert.rejects(notify("outside", "LOW"), /needs a client/);
  const context = { client: client(), recordId: "PO-7", data: { vendor: "ACME" } };
  const [unclassified, classified] = await withNotifyContext(context, async () => [
    // Nothing classifies it: the severity's audience.
    await notify("Vendor Name is missing", "HIGH"),
    // The tenant's classification of its error class.
    await notify("Vendor Name is missing", "HIGH", { errorClass: "mapping", errorCode: "VENDOR_NAME" }),
  ]);
  assert.equal(unclassified.deliveries[0].recipient, "agent@example.com");
  assert.equal(classified.deliveries[0].recipient, "buyer@example.com");

  const shown = await client().get(unclassified.id);
  assert.equal(shown.type, "error");
  assert.equal(shown.severity, "high");
  assert.equal(shown.priority, "high");
  assert.equal(shown.correlation_id, "PO-7");
  assert.deepEqual(shown.data, { vendor: "ACME", message: "Vendor Name is missing", record_id: "PO-7" });
  const mapped = await client().get(classified.id);
  assert.equal(mapped.error_class, "mapping");
  assert.equal(mapped.priority, "low", "the class's priority");

  // A context within a context: the inner one's audience, the outer one's client.
  const addressed = await withNotifyContext(context, () => withNotifyContext({ audience: "support" }, () => notify("Paid twice", "LOW")));
  assert.equal(addressed.deliveries[0].recipient, "agent@example.com");
});
