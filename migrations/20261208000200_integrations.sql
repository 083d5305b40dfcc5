-- A tenant's own provider integrations (PUT /v1/integrations/{channel}/{provider}): the
-- credentials and sender settings one provider unit reads, per tenant, channel and
-- provider. `settings` holds the non-secret settings; `secrets` maps each secret setting
-- to its sealed value (`v1.<key id>.<base64>`, bootstrap/src/seal.rs, the tenant and
-- `integration:<channel>/<provider>` bound in); `hints` maps it to its last four
-- characters, the only part ever shown again. `position` is the failover order (`order`
-- in the API); `version` moves on every change, so a worker's cached client can tell it
-- is stale.
CREATE TABLE integrations (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    channel text NOT NULL,
    provider text NOT NULL,
    settings jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    secrets jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(secrets) = 'object'),
    hints jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(hints) = 'object'),
    active boolean NOT NULL DEFAULT true,
    position integer NOT NULL DEFAULT 0,
    version bigint NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, channel, provider)
);

-- The ids of the keys that sealed a row's secrets, sorted, from the sealed values
-- themselves (`v1.<key id>.…`), so they cannot disagree.
CREATE FUNCTION sealed_key_ids(secrets jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(DISTINCT split_part(value, '.', 2) ORDER BY split_part(value, '.', 2)), '{}')
    FROM jsonb_each_text(secrets)
$$;

-- `notify-api admin rotate-integration-key` looks for rows whose key ids are not exactly
-- `{<current>}`: two range scans of this index either side of that value, which skip the
-- rows already rotated.
ALTER TABLE integrations ADD COLUMN key_ids text[] GENERATED ALWAYS AS (sealed_key_ids(secrets)) STORED;
CREATE INDEX integrations_key_ids ON integrations (key_ids);

-- A worker reads a tenant's active integrations of one channel in failover order.
CREATE INDEX integrations_active ON integrations (tenant_id, channel, position, provider) WHERE active;

-- Every change names `integration:<tenant>:<channel>` on `notify_cache` (as migration
-- 20261203000012 names a tenant), whoever made it, when its transaction commits: workers
-- drop the clients they built from that tenant's integrations of that channel, on every
-- replica. The API's cache holds no integration and ignores these. A TRUNCATE names
-- nothing: '*' drops everything.
CREATE FUNCTION notify_integration() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        PERFORM pg_notify('notify_cache', '*');
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('notify_cache', 'integration:' || OLD.tenant_id::text || ':' || OLD.channel);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('notify_cache', 'integration:' || NEW.tenant_id::text || ':' || NEW.channel);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER notify_integration AFTER INSERT OR UPDATE OR DELETE ON integrations
    FOR EACH ROW EXECUTE FUNCTION notify_integration();
CREATE TRIGGER notify_integration_truncate AFTER TRUNCATE ON integrations
    FOR EACH STATEMENT EXECUTE FUNCTION notify_integration();
