-- The API remembers the keys it found unknown for a while (store/src/cache.rs), so a
-- client repeating a wrong key costs no database read per request. A new key must then
-- be heard of like any change to a key: it names its tenant on `notify_cache`, and every
-- replica forgets the unknown keys it holds (a key made by the CLI or by SQL by hand
-- works on every replica at once).
CREATE TRIGGER notify_cache_new_key AFTER INSERT ON api_keys
    FOR EACH ROW EXECUTE FUNCTION notify_cache();
