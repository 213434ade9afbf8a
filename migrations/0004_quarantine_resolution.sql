-- A quarantined row resolved by an operator (src/store/postgres/quarantine.rs): the
-- Resolution as JSON (restored or discarded, by whom, why, when). NULL while it is
-- unresolved: only those are counted (orderbridge_quarantined_rows, /readyz). A
-- resolved row is kept, never deleted.
ALTER TABLE quarantine ADD COLUMN resolution json;
