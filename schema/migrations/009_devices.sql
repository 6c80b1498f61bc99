-- 009_devices: the device registry, read by `firehose serve --mqtt-auth postgres`.
--
-- Named firehose_devices, not devices: firehose_* names are firehose's (a rule's typed table
-- may not take one), so the registry cannot collide with a table of the deployment's own.
--
-- One row a device. `firehose devices add|list|disable|enable|grant|ungrant|rotate|remove`
-- changes it (so may a provisioning system, with the same columns); every running broker
-- loads the whole table at start, keeps it in memory, and is told of each change by the
-- trigger below (LISTEN firehose_devices), so a change reaches live connections within a
-- second. A broker keeps admitting from what it loaded while PostgreSQL is down.
--   id           text: the device id, its MQTT username and client id. COLLATE "C": ids
--                compare byte by byte, as the broker compares them.
--   secret_hash  text: the hash of its password: fh1$SALT$MAC for a random device secret
--                (HMAC-SHA256, checked in microseconds), or a bcrypt hash ($2a$...) for a
--                password a person chose. The secret itself is never stored.
--   read, write  text[]: MQTT topic filters it may subscribe to / publish on beyond its own
--                topics (the read=FILTER and write=FILTER fields of the credentials file).
--   sparkplug    text[]: the Sparkplug B groups in which it is an edge node.
--   enabled      boolean: a disabled device is refused at CONNECT and disconnected.
--   created_at, updated_at  timestamptz: when added and last changed.
--   last_seen    timestamptz: about when it last connected (written by the brokers in
--                batches, every 10 s; NULL: never). Writing it notifies no one.
CREATE TABLE firehose_devices (
    id          text COLLATE "C" PRIMARY KEY,
    secret_hash text NOT NULL,
    read        text[] NOT NULL DEFAULT '{}',
    write       text[] NOT NULL DEFAULT '{}',
    sparkplug   text[] NOT NULL DEFAULT '{}',
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz
);

-- Every change that matters to a broker notifies channel firehose_devices with the device's
-- id (the brokers re-read the table); a change of last_seen or updated_at alone does not.
CREATE FUNCTION firehose_devices_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (OLD.id, OLD.secret_hash, OLD.read, OLD.write, OLD.sparkplug, OLD.enabled)
            IS NOT DISTINCT FROM (NEW.id, NEW.secret_hash, NEW.read, NEW.write, NEW.sparkplug, NEW.enabled) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('firehose_devices', OLD.id);
    ELSE
        PERFORM pg_notify('firehose_devices', NEW.id);
        IF TG_OP = 'UPDATE' AND OLD.id <> NEW.id THEN
            PERFORM pg_notify('firehose_devices', OLD.id);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER firehose_devices_notify AFTER INSERT OR UPDATE OR DELETE ON firehose_devices
    FOR EACH ROW EXECUTE FUNCTION firehose_devices_notify();

-- TRUNCATE fires no row trigger: it notifies once, with an empty id.
CREATE FUNCTION firehose_devices_notify_all() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('firehose_devices', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER firehose_devices_notify_truncate AFTER TRUNCATE ON firehose_devices
    FOR EACH STATEMENT EXECUTE FUNCTION firehose_devices_notify_all();
