-- The archive (src/archive/, src/store/archived.rs): orders that ended long ago leave
-- the hot tables for segment files; the store keeps where each one is, written in the
-- same transaction that deletes its rows, so an order is in exactly one place.
-- `entry` is the ArchiveEntry as JSON (a step's precondition compares its text).
CREATE TABLE archive_index (
    order_id    uuid PRIMARY KEY,
    segment     text COLLATE "C" NOT NULL,
    entry       json NOT NULL
);
CREATE INDEX archive_index_by_segment ON archive_index (segment, order_id);

-- The archive's own log, hash-chained: purges, legal holds and releases.
CREATE TABLE archive_log (
    seq         bigint PRIMARY KEY,
    record      json NOT NULL
);
