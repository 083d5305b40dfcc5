// A small service of the kind seed 000 describes: it imports purchase orders, and a
// business error in an import becomes a notification in one line. The handler knows
// nothing of tenants, topics or HTTP calls: `withNotifyContext` says, once per request,
// which record the work is about, and the tenant's classification (or the severity)
// decides who hears of it.
//
//   NOTIFY_URL=http://127.0.0.1:8080 NOTIFY_API_KEY=nk_... PORT=3000 node server.js
//   curl -X POST localhost:3000/purchase-orders -d '{"id": "PO-7"}'

import http from "node:http";

import { NotifyClient } from "@notify/client";
import { notify, withNotifyContext } from "@notify/client/context";

const client = new NotifyClient({ baseUrl: process.env.NOTIFY_URL, apiKey: process.env.NOTIFY_API_KEY });

/** The business logic: no notification plumbing beyond the one line. */
async function importPurchaseOrder(order) {
  if (!order.vendor_name) {
    const sent = await notify("Vendor Name is missing", "HIGH");
    return { imported: false, notification: sent.id };
  }
  return { imported: true };
}

const server = http.createServer(async (request, response) => {
  if (request.method !== "POST" || request.url !== "/purchase-orders") {
    response.writeHead(404).end();
    return;
  }
  try {
    let body = "";
    for await (const chunk of request) body += chunk;
    const order = JSON.parse(body);
    const context = { client, recordId: order.id, correlationId: request.headers["x-request-id"] };
    const result = await withNotifyContext(context, () => importPurchaseOrder(order));
    response.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify(result));
  } catch (error) {
    response.writeHead(500, { "Content-Type": "application/json" }).end(JSON.stringify({ error: String(error) }));
  }
});

server.listen(Number(process.env.PORT ?? 3000), "127.0.0.1", () => {
  console.log(`listening on ${server.address().port}`);
});
