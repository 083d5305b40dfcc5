-- Every API replica caches what each request reads (callers by API key, tenant settings,
-- notification types, compiled templates: store/src/cache.rs) and LISTENs on
-- `notify_cache`. A change to any of these rows, by any writer (the API, the CLI, SQL by
-- hand), names its tenant on that channel when its transaction commits, and every
-- replica drops that tenant's entries. A TRUNCATE names no tenant: '*' drops everything.
-- NOTIFY folds identical payloads of one transaction, so a change of many rows of one
-- tenant is one notification.
CREATE FUNCTION notify_cache() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        PERFORM pg_notify('notify_cache', '*');
    ELSIF TG_TABLE_NAME = 'tenants' THEN
        PERFORM pg_notify('notify_cache', OLD.id::text);
    ELSE
        -- Both tenants when an update moves a row from one to another.
        IF TG_OP <> 'INSERT' THEN
            PERFORM pg_notify('notify_cache', OLD.tenant_id::text);
        END IF;
        IF TG_OP <> 'DELETE' THEN
            PERFORM pg_notify('notify_cache', NEW.tenant_id::text);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

-- A new tenant or key needs no notification: nothing is cached for a tenant that does not
-- exist, nor for an unknown key. Recording a key's last use (`last_used_at`) changes
-- nothing cached either, and happens once a minute per key: it does not notify.
CREATE TRIGGER notify_cache AFTER UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION notify_cache();
CREATE TRIGGER notify_cache AFTER DELETE OR UPDATE OF id, tenant_id, key_hash, revoked_at ON api_keys
    FOR EACH ROW EXECUTE FUNCTION notify_cache();
-- A new type matters: the cache also holds the answer that a type does not exist.
CREATE TRIGGER notify_cache AFTER INSERT OR UPDATE OR DELETE ON notification_types
    FOR EACH ROW EXECUTE FUNCTION notify_cache();
CREATE TRIGGER notify_cache AFTER INSERT OR UPDATE OR DELETE ON templates
    FOR EACH ROW EXECUTE FUNCTION notify_cache();

CREATE TRIGGER notify_cache_truncate AFTER TRUNCATE ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION notify_cache();
CREATE TRIGGER notify_cache_truncate AFTER TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION notify_cache();
CREATE TRIGGER notify_cache_truncate AFTER TRUNCATE ON notification_types
    FOR EACH STATEMENT EXECUTE FUNCTION notify_cache();
CREATE TRIGGER notify_cache_truncate AFTER TRUNCATE ON templates
    FOR EACH STATEMENT EXECUTE FUNCTION notify_cache();
