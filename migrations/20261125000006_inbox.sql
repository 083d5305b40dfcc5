-- The in-app channel (docs/contract.md §3): deliveries written to the subscriber's inbox in the
-- accept transaction, read by the subscriber with a short-lived token.

ALTER TABLE deliveries
    DROP CONSTRAINT deliveries_channel_check,
    ADD CONSTRAINT deliveries_channel_check CHECK (channel IN ('email', 'sms', 'whatsapp', 'novu', 'in_app'));

-- One item per in-app delivery, under the delivery's id (a UUIDv7, so ids order items by
-- creation, which the inbox's cursor and the socket's `since` rely on). `read_at` and
-- `archived_at` are the subscriber's; deleting an item deletes the row (the delivery and
-- its status stay).
CREATE TABLE inbox_items (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    subscriber_id    text NOT NULL,
    notification_id  uuid NOT NULL REFERENCES notifications (id),
    type             text NOT NULL,
    title            text,
    body             text,
    action_url       text,
    tags             text[] NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL,
    read_at          timestamptz,
    archived_at      timestamptz
);
CREATE INDEX inbox_items_subscriber ON inbox_items (tenant_id, subscriber_id, id DESC);
-- The unread badge: counted from this index alone.
CREATE INDEX inbox_items_unread ON inbox_items (tenant_id, subscriber_id)
    WHERE read_at IS NULL AND archived_at IS NULL;
