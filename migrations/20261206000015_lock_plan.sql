-- The advisory lock of a provider's message (migration 000011), the same lock, as plpgsql:
-- a SQL-language function called from a query is planned again on every call, which the
-- profile of the peer shape found costing more than the lock itself (`record_outcomes`
-- takes one per outcome). plpgsql plans its statement once per connection.
CREATE OR REPLACE FUNCTION lock_provider_message(provider text, provider_message_id text) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1316, hashtext(provider || chr(31) || provider_message_id));
    RETURN 1;
END
$$;
