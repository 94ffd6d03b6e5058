-- provbox schema 2: which boxes share this database right now. Each box writes its row
-- every few seconds; the live ones split every DHCP pool between them (docs/redundancy.md).
-- `seen` is the database's clock, so the boxes' own clocks do not matter.
CREATE TABLE boxes (
    name text        PRIMARY KEY,
    seen timestamptz NOT NULL DEFAULT now()
);
