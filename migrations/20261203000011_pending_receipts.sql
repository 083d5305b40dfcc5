-- Receipts that name a message no delivery has yet: a provider's callback can arrive
-- before the worker has recorded the send that gave the message its id. Each is kept
-- here and applied when the outcome naming that id commits (`record_group`), so a fast
-- `delivered` or `failed` is never lost. Receipts of other systems' messages on the same
-- provider account land here too and are never claimed: the table is bounded by an id
-- window on insert and by age (the API's purge), see store/src/receipts.rs.
CREATE TABLE pending_receipts (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider            text NOT NULL,
    provider_message_id text NOT NULL,
    -- The delivery status it reports, or NULL when it only suppresses addresses.
    status              text,
    error_code          text,
    error_message       text,
    -- Addresses to suppress for the tenant of the delivery it turns out to name.
    suppress_channel    text,
    suppress_reason     text,
    suppress_addresses  text[],
    received_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX pending_receipts_message ON pending_receipts (provider, provider_message_id);
CREATE INDEX pending_receipts_received ON pending_receipts (received_at);

-- The lock a receipt and the outcome naming its message both take before reading the
-- other's rows (store/src/receipts.rs). Class 1316 keeps it apart from other advisory locks.
CREATE FUNCTION lock_provider_message(provider text, provider_message_id text) RETURNS integer
LANGUAGE sql AS $$
    SELECT 1 FROM (SELECT pg_advisory_xact_lock(1316, hashtext(provider || chr(31) || provider_message_id))) l
$$;
