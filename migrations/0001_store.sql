-- The store on PostgreSQL (src/store/postgres.rs): the same rows as the embedded
-- layout (src/store/kv/mod.rs), one table per key space. Records are JSON, type `json`
-- (the text as written: nothing is re-encoded on insert, and every string serde
-- writes is accepted, where `jsonb` refuses \u0000): readable and queryable with
-- SQL (->, ->>), compressed by PostgreSQL itself (TOAST) when large. What
-- something scans or checks is a column with an index. Text keys sort bytewise
-- (COLLATE "C"), as the embedded engines' keys do.

-- Orders: the record, and the columns the indexes read (state, earliest due time,
-- customer and what the history rules read of the order). `last_seq` is a step's
-- precondition: UPDATE ... WHERE last_seq = <loaded>.
CREATE TABLE orders (
    id          uuid PRIMARY KEY,
    last_seq    bigint NOT NULL,
    state       text COLLATE "C" NOT NULL,
    timer_ms    bigint,
    customer    text COLLATE "C" NOT NULL,
    prior       json NOT NULL,
    record      json NOT NULL
);
CREATE INDEX orders_by_state ON orders (state, id);
CREATE INDEX orders_by_timer ON orders (timer_ms, id) WHERE timer_ms IS NOT NULL;
CREATE INDEX orders_by_customer ON orders (customer, id);

-- Invariant 4: one order per (connector, external id).
CREATE TABLE external_ids (
    connector   text COLLATE "C" NOT NULL,
    external_id text COLLATE "C" NOT NULL,
    order_id    uuid NOT NULL,
    PRIMARY KEY (connector, external_id)
);

-- The audit log: one row per event, hash-chained per order.
CREATE TABLE events (
    order_id    uuid NOT NULL,
    seq         bigint NOT NULL,
    record      json NOT NULL,
    PRIMARY KEY (order_id, seq)
);

-- The outbox: pending effects by due time (ms), then effect id. A step names an
-- effect as it read it (id and due time); a row no longer so is a conflict.
CREATE TABLE outbox (
    order_id    uuid NOT NULL,
    seq         bigint NOT NULL,
    idx         integer NOT NULL,
    due_ms      bigint NOT NULL,
    record      json NOT NULL,
    PRIMARY KEY (order_id, seq, idx)
);
CREATE INDEX outbox_by_due ON outbox (due_ms, order_id, seq, idx);

CREATE TABLE dead_letters (
    order_id    uuid NOT NULL,
    seq         bigint NOT NULL,
    idx         integer NOT NULL,
    record      json NOT NULL,
    PRIMARY KEY (order_id, seq, idx)
);

CREATE TABLE invoices (
    number      text COLLATE "C" PRIMARY KEY,
    order_id    uuid NOT NULL
);

-- Payments seen (once per source and id) and those waiting for an operator.
CREATE TABLE payments (
    source      text COLLATE "C" NOT NULL,
    payment_id  text COLLATE "C" NOT NULL,
    outcome     json NOT NULL,
    PRIMARY KEY (source, payment_id)
);
CREATE TABLE unmatched_payments (
    source      text COLLATE "C" NOT NULL,
    payment_id  text COLLATE "C" NOT NULL,
    payment     json NOT NULL,
    PRIMARY KEY (source, payment_id)
);

-- Single-use link ids, spent once.
CREATE TABLE used_links (
    link_id     text COLLATE "C" PRIMARY KEY,
    used        json NOT NULL
);

-- Digest items held for a group's next digest mail.
CREATE TABLE digest_items (
    grp         text COLLATE "C" NOT NULL,
    order_id    uuid NOT NULL,
    seq         bigint NOT NULL,
    idx         integer NOT NULL,
    item        json NOT NULL,
    PRIMARY KEY (grp, order_id, seq, idx)
);

-- Background jobs' state (poll watermarks, digest numbering).
CREATE TABLE jobs (
    name        text COLLATE "C" PRIMARY KEY,
    state       json NOT NULL
);

-- Rows set aside because they could not be decoded: `space` and `key` name where
-- the row was (`orders`, the order id), `raw` is its text.
CREATE TABLE quarantine (
    space       text COLLATE "C" NOT NULL,
    key         text COLLATE "C" NOT NULL,
    what        text NOT NULL,
    error       text NOT NULL,
    at          timestamptz NOT NULL,
    raw         text NOT NULL,
    PRIMARY KEY (space, key)
);
