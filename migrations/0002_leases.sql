-- Several daemons on one database (src/store/postgres.rs, README "Running several
-- daemons"). Lease times are the server's clock (now()), so replicas' clocks need
-- not agree.

-- An effect being performed: by whom (a replica's holder id) and until when. A
-- replica claims a due, unclaimed (or expired) row with one UPDATE, renews the claim
-- while the push runs, and the outcome (delete, or delete and insert rescheduled)
-- clears it. A dead replica's claims lapse at `claimed_until`.
ALTER TABLE outbox ADD COLUMN claimed_by text, ADD COLUMN claimed_until timestamptz;

-- Scheduled jobs (timers and digests, pollers, reconciliation): one holder at a time,
-- until `until`; the holder renews it at each run, another replica takes it once it
-- has lapsed.
CREATE TABLE job_leases (
    name        text COLLATE "C" PRIMARY KEY,
    holder      text NOT NULL,
    until       timestamptz NOT NULL
);
