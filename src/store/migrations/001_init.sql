-- provbox schema 1: the state two or more boxes share (docs/redundancy.md).

-- DHCP leases, one row per address. `state`: 1 bound, 2 free (remembered for its client),
-- 3 declined. `seq` orders changes so each box can fetch what the others wrote.
CREATE SEQUENCE lease_seq;
CREATE TABLE leases (
    ip           bigint   PRIMARY KEY,
    client       bytea    NOT NULL,
    mac          bytea    NOT NULL,
    state        smallint NOT NULL,
    expires      bigint   NOT NULL,
    hostname     text,
    vendor_class text,
    box          text     NOT NULL,
    seq          bigint   NOT NULL DEFAULT nextval('lease_seq')
);
-- One bound row per client: a client that moves takes its key along (the old row is
-- freed in the same transaction), so no client ever holds two addresses.
CREATE UNIQUE INDEX leases_bound_client ON leases (client) WHERE state = 1;
CREATE INDEX leases_seq ON leases (seq);

-- PIN bindings: one row per device; the check and the insert run under a per-PIN lock.
CREATE TABLE pin_bindings (
    mac      text        PRIMARY KEY,
    pin      text        NOT NULL,
    box      text        NOT NULL,
    bound_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pin_bindings_pin ON pin_bindings (pin);

-- Device records (status and timeline, the JSON the dashboard shows), as the box that
-- changed one last wrote it; each event in a timeline names the box that saw it.
CREATE SEQUENCE device_seq;
CREATE TABLE devices (
    key  text   PRIMARY KEY,
    body text   NOT NULL,
    box  text   NOT NULL,
    seq  bigint NOT NULL DEFAULT nextval('device_seq')
);
CREATE INDEX devices_seq ON devices (seq);

-- What each box publishes: path -> sha256 of the published version.
CREATE TABLE catalog_digests (
    box       text        NOT NULL,
    path      text        NOT NULL,
    sha256    text        NOT NULL,
    published timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (box, path)
);

-- The lab CA every box serves certificates from (one row).
CREATE TABLE lab_ca (
    id       int  PRIMARY KEY CHECK (id = 1),
    cert_pem text NOT NULL,
    key_pem  text NOT NULL
);

-- The inventory as `provbox devices import` last wrote it (one document).
CREATE TABLE inventory (
    id       int         PRIMARY KEY CHECK (id = 1),
    body     text        NOT NULL,
    imported timestamptz NOT NULL DEFAULT now()
);
