-- Delivery receipts and suppression (docs/providers.md §9): providers report what became
-- of a message they accepted, by their own id for it; hard bounces and complaints put the
-- address on the tenant's suppression list, and later deliveries to it are not sent.

-- A receipt finds its delivery by the provider and the provider's message id. Only sent
-- deliveries have an id, so the index leaves out the (many) rows still waiting.
CREATE INDEX deliveries_provider_message ON deliveries (provider, provider_message_id)
    WHERE provider_message_id IS NOT NULL;

-- Addresses a tenant no longer sends to on a channel. The store normalises `address`
-- (email addresses lower-cased) before writing or matching it, so the intake's check is
-- an equality on the primary key. A delivery written as `suppressed` carries the reason
-- in `last_error_code`.
CREATE TABLE suppressions (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    channel     text NOT NULL CHECK (channel IN ('email', 'sms', 'whatsapp', 'novu')),
    address     text NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('bounce', 'complaint')),
    -- The provider that reported it (`ses`, ...).
    source      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, channel, address)
);
