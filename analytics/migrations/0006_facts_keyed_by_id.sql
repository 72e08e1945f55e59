-- Every fact table sorted by its fact's identity alone, with a revision column that says which
-- of two rows under one id wins. Same rules as 0001: ClickHouse 18.16 and current (no
-- DateTime64, TTL, LowCardinality, Bool), DateTime('UTC').
--
-- Why: 0001 and 0004 sorted facts by (channel, at, event_id), (reason, received_at, dlq_id),
-- (warehouse, toDate(created_at), command_id) and so on, and partitioned them by month of that
-- time. ReplacingMergeTree only collapses rows with the same sorting key in the same partition,
-- so a fact emitted twice under one id with a different time (a worker that decided the input
-- again and re-emitted its events, a DLQ record stamped anew) stayed two rows for good, and the
-- queries that trusted "a replay carries the same values" (argMax by seq over raw events, any()
-- per id) picked one of the two at random. Now:
--   * ORDER BY the fact id (with order_id where the id is made from it: event id = (order, seq),
--     line = (order, line id)); no time partition, since no time of a fact is stable across
--     its emissions. stock_movements is left as it is: its sku, warehouse and time all come
--     from its id (the ledger stream entry), so they cannot differ.
--   * rev UInt64 = (seq << 44) | emission time in ms (facts/revision in analytics/facts.py):
--     the replacing version, and the argMax key of every query. A redelivery carries the same
--     rev and collapses; a re-emission carries a later time and replaces the earlier one; a
--     newer snapshot of an order (higher seq) replaces an older one. The DEFAULT computes it
--     for rows copied from the old tables and for a sink still on old code: to the second, and
--     for orders and lines from seq alone (they have no emission time), so two emissions of
--     one snapshot written before 0006 stay as tied as they were.
--
-- How (18.16 cannot change a sorting key): each table is created anew as <table>__0006, swapped
-- in by RENAME (the old one becomes <table>__pre0006) and then the old rows are copied in. The
-- CREATE and the RENAME carry "skip if exists: <table>__pre0006" (analytics/schema.py): once
-- swapped they are skipped, so a re-run (a crash before the bookkeeping row, two migrators at
-- once) does nothing twice. The copy runs after the swap: a row a running sink inserted into
-- the old table up to the swap is copied, one inserted after it lands in the new table; a
-- second copy only adds rows that collapse. The __pre0006 tables are kept (the copy's source,
-- and the marker of the swap); drop them by hand once the new tables are trusted.
--
-- Views that read these tables are dropped first and made again at the end (they now collapse
-- per id by rev before anything else); the per-minute MV is dropped before order_lines moves and
-- made again after, then sales_by_minute is backfilled from order_lines (copies collapse).

DROP TABLE IF EXISTS {db}.sales_per_minute
;
DROP TABLE IF EXISTS {db}.order_status
;
DROP TABLE IF EXISTS {db}.order_lines_latest
;
DROP TABLE IF EXISTS {db}.order_latest
;
DROP TABLE IF EXISTS {db}.sales_by_minute_mv
;

-- ---------------------------------------------------------------------------- order_events

-- skip if exists: {db}.order_events__pre0006
CREATE TABLE IF NOT EXISTS {db}.order_events__0006
(
    event_id String,
    order_id String,
    seq UInt64,
    kind String,
    from_state String,
    to_state String,
    reason String,
    at DateTime('UTC'),
    channel String,
    shop_id String,
    external_id String,
    warehouse String,
    actor String,
    alloc_sku Array(String),
    alloc_warehouse Array(String),
    alloc_qty Array(Int64),
    rev UInt64 DEFAULT bitOr(bitShiftLeft(seq, 44), toUInt64(toUnixTimestamp(at)) * 1000),
    ingested_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(rev)
ORDER BY (order_id, event_id)
;
-- skip if exists: {db}.order_events__pre0006
RENAME TABLE {db}.order_events TO {db}.order_events__pre0006,
    {db}.order_events__0006 TO {db}.order_events
;
INSERT INTO {db}.order_events (event_id, order_id, seq, kind, from_state, to_state, reason, at,
    channel, shop_id, external_id, warehouse, actor, alloc_sku, alloc_warehouse, alloc_qty,
    ingested_at)
SELECT event_id, order_id, seq, kind, from_state, to_state, reason, at, channel, shop_id,
    external_id, warehouse, actor, alloc_sku, alloc_warehouse, alloc_qty, ingested_at
FROM {db}.order_events__pre0006
;
DROP TABLE IF EXISTS {db}.order_events__0006
;

-- ---------------------------------------------------------------------------- orders

-- skip if exists: {db}.orders__pre0006
CREATE TABLE IF NOT EXISTS {db}.orders__0006
(
    order_id String,
    version UInt64,
    event_id String,
    channel String,
    shop_id String,
    external_id String,
    channel_status String,
    payment_status String,
    created_at DateTime('UTC'),
    updated_at DateTime('UTC'),
    paid_at Nullable(DateTime('UTC')),
    currency String,
    total Decimal(18, 4),
    paid_total Decimal(18, 4),
    shipping_fee Decimal(18, 4),
    discount_total Decimal(18, 4),
    country String,
    province_code String,
    city String,
    line_count UInt32,
    units Int64,
    buyer_hash String,
    rev UInt64 DEFAULT bitShiftLeft(version, 44),
    ingested_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(rev)
ORDER BY order_id
;
-- skip if exists: {db}.orders__pre0006
RENAME TABLE {db}.orders TO {db}.orders__pre0006, {db}.orders__0006 TO {db}.orders
;
INSERT INTO {db}.orders (order_id, version, event_id, channel, shop_id, external_id,
    channel_status, payment_status, created_at, updated_at, paid_at, currency, total,
    paid_total, shipping_fee, discount_total, country, province_code, city, line_count, units,
    buyer_hash, ingested_at)
SELECT order_id, version, event_id, channel, shop_id, external_id, channel_status,
    payment_status, created_at, updated_at, paid_at, currency, total, paid_total, shipping_fee,
    discount_total, country, province_code, city, line_count, units, buyer_hash, ingested_at
FROM {db}.orders__pre0006
;
DROP TABLE IF EXISTS {db}.orders__0006
;

-- ---------------------------------------------------------------------------- order_lines

-- skip if exists: {db}.order_lines__pre0006
CREATE TABLE IF NOT EXISTS {db}.order_lines__0006
(
    order_id String,
    line_id String,
    version UInt64,
    sku String,
    channel_sku String,
    quantity Int64,
    unit_price Decimal(18, 4),
    discount Decimal(18, 4),
    paid_amount Decimal(18, 4),
    is_gift UInt8,
    currency String,
    channel String,
    shop_id String,
    created_at DateTime('UTC'),
    province_code String,
    rev UInt64 DEFAULT bitShiftLeft(version, 44),
    ingested_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(rev)
ORDER BY (order_id, line_id)
;
-- skip if exists: {db}.order_lines__pre0006
RENAME TABLE {db}.order_lines TO {db}.order_lines__pre0006,
    {db}.order_lines__0006 TO {db}.order_lines
;
INSERT INTO {db}.order_lines (order_id, line_id, version, sku, channel_sku, quantity,
    unit_price, discount, paid_amount, is_gift, currency, channel, shop_id, created_at,
    province_code, ingested_at)
SELECT order_id, line_id, version, sku, channel_sku, quantity, unit_price, discount,
    paid_amount, is_gift, currency, channel, shop_id, created_at, province_code, ingested_at
FROM {db}.order_lines__pre0006
;
DROP TABLE IF EXISTS {db}.order_lines__0006
;

-- ---------------------------------------------------------------------------- dlq

-- skip if exists: {db}.dlq__pre0006
CREATE TABLE IF NOT EXISTS {db}.dlq__0006
(
    dlq_id String,
    reason String,
    detail String,
    source_topic String,
    source_partition Int32,
    source_offset Int64,
    channel String,
    received_at DateTime('UTC'),
    rev UInt64 DEFAULT toUInt64(toUnixTimestamp(received_at)) * 1000,
    ingested_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(rev)
ORDER BY dlq_id
;
-- skip if exists: {db}.dlq__pre0006
RENAME TABLE {db}.dlq TO {db}.dlq__pre0006, {db}.dlq__0006 TO {db}.dlq
;
INSERT INTO {db}.dlq (dlq_id, reason, detail, source_topic, source_partition, source_offset,
    channel, received_at, ingested_at)
SELECT dlq_id, reason, detail, source_topic, source_partition, source_offset, channel,
    received_at, ingested_at
FROM {db}.dlq__pre0006
;
DROP TABLE IF EXISTS {db}.dlq__0006
;

-- ---------------------------------------------------------------------------- fulfilment_commands

-- skip if exists: {db}.fulfilment_commands__pre0006
CREATE TABLE IF NOT EXISTS {db}.fulfilment_commands__0006
(
    command_id String,
    kind String,
    order_id String,
    channel String,
    shop_id String,
    warehouse String,
    carrier String,
    attempt UInt32,
    shipment String,
    refers_to String,
    merged_orders UInt32,
    line_count UInt32,
    units Int64,
    weight_g Int64,
    created_at DateTime('UTC'),
    rev UInt64 DEFAULT toUInt64(toUnixTimestamp(created_at)) * 1000,
    ingested_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(rev)
ORDER BY command_id
;
-- skip if exists: {db}.fulfilment_commands__pre0006
RENAME TABLE {db}.fulfilment_commands TO {db}.fulfilment_commands__pre0006,
    {db}.fulfilment_commands__0006 TO {db}.fulfilment_commands
;
INSERT INTO {db}.fulfilment_commands (command_id, kind, order_id, channel, shop_id, warehouse,
    carrier, attempt, shipment, refers_to, merged_orders, line_count, units, weight_g,
    created_at, ingested_at)
SELECT command_id, kind, order_id, channel, shop_id, warehouse, carrier, attempt, shipment,
    refers_to, merged_orders, line_count, units, weight_g, created_at, ingested_at
FROM {db}.fulfilment_commands__pre0006
;
DROP TABLE IF EXISTS {db}.fulfilment_commands__0006
;

-- ---------------------------------------------------------------------------- wms_events

-- skip if exists: {db}.wms_events__pre0006
CREATE TABLE IF NOT EXISTS {db}.wms_events__0006
(
    event_id String,
    command_id String,
    order_id String,
    kind String,
    warehouse String,
    carrier String,
    tracking_number String,
    sellable UInt8,
    line_count UInt32,
    units Int64,
    at DateTime('UTC'),
    rev UInt64 DEFAULT toUInt64(toUnixTimestamp(at)) * 1000,
    ingested_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(rev)
ORDER BY event_id
;
-- skip if exists: {db}.wms_events__pre0006
RENAME TABLE {db}.wms_events TO {db}.wms_events__pre0006,
    {db}.wms_events__0006 TO {db}.wms_events
;
INSERT INTO {db}.wms_events (event_id, command_id, order_id, kind, warehouse, carrier,
    tracking_number, sellable, line_count, units, at, ingested_at)
SELECT event_id, command_id, order_id, kind, warehouse, carrier, tracking_number, sellable,
    line_count, units, at, ingested_at
FROM {db}.wms_events__pre0006
;
DROP TABLE IF EXISTS {db}.wms_events__0006
;

-- ---------------------------------------------------------------------------- aftersales_requests

-- skip if exists: {db}.aftersales_requests__pre0006
CREATE TABLE IF NOT EXISTS {db}.aftersales_requests__0006
(
    request_id String,
    order_id String,
    kind String,
    line_ids Array(String),
    amount Nullable(Decimal(18, 4)),
    exchange_sku String,
    requested_by String,
    new_province_code String,
    new_city String,
    at DateTime('UTC'),
    rev UInt64 DEFAULT toUInt64(toUnixTimestamp(at)) * 1000,
    ingested_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(rev)
ORDER BY request_id
;
-- skip if exists: {db}.aftersales_requests__pre0006
RENAME TABLE {db}.aftersales_requests TO {db}.aftersales_requests__pre0006,
    {db}.aftersales_requests__0006 TO {db}.aftersales_requests
;
INSERT INTO {db}.aftersales_requests (request_id, order_id, kind, line_ids, amount,
    exchange_sku, requested_by, new_province_code, new_city, at, ingested_at)
SELECT request_id, order_id, kind, line_ids, amount, exchange_sku, requested_by,
    new_province_code, new_city, at, ingested_at
FROM {db}.aftersales_requests__pre0006
;
DROP TABLE IF EXISTS {db}.aftersales_requests__0006
;

-- ---------------------------------------------------------------------------- sales_by_minute

-- One row per line revision (the MV copies order_lines' rev), collapsed per line by rev.
-- skip if exists: {db}.sales_by_minute__pre0006
CREATE TABLE IF NOT EXISTS {db}.sales_by_minute__0006
(
    minute DateTime('UTC'),
    channel String,
    shop_id String,
    sku String,
    province_code String,
    currency String,
    order_id String,
    line_id String,
    version UInt64,
    quantity Int64,
    paid_amount Decimal(18, 4),
    rev UInt64 DEFAULT bitShiftLeft(version, 44)
)
ENGINE = ReplacingMergeTree(rev)
ORDER BY (order_id, line_id)
;
-- skip if exists: {db}.sales_by_minute__pre0006
RENAME TABLE {db}.sales_by_minute TO {db}.sales_by_minute__pre0006,
    {db}.sales_by_minute__0006 TO {db}.sales_by_minute
;
INSERT INTO {db}.sales_by_minute (minute, channel, shop_id, sku, province_code, currency,
    order_id, line_id, version, quantity, paid_amount)
SELECT minute, channel, shop_id, sku, province_code, currency, order_id, line_id, version,
    quantity, paid_amount
FROM {db}.sales_by_minute__pre0006
;
DROP TABLE IF EXISTS {db}.sales_by_minute__0006
;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.sales_by_minute_mv TO {db}.sales_by_minute AS
SELECT
    toStartOfMinute(created_at) AS minute,
    channel,
    shop_id,
    sku,
    province_code,
    currency,
    order_id,
    line_id,
    version,
    quantity,
    paid_amount,
    rev
FROM {db}.order_lines
;

-- What order_lines got while the MV was away (and everything before: copies collapse).
INSERT INTO {db}.sales_by_minute (minute, channel, shop_id, sku, province_code, currency,
    order_id, line_id, version, quantity, paid_amount, rev)
SELECT
    toStartOfMinute(created_at) AS minute,
    channel,
    shop_id,
    sku,
    province_code,
    currency,
    order_id,
    line_id,
    version,
    quantity,
    paid_amount,
    rev
FROM {db}.order_lines
;

-- ---------------------------------------------------------------------------- views
-- Column aliases never reuse a source column name inside the same SELECT (0002 explains).

-- One row per order event: its latest revision. Everything that reads events reads this (or
-- collapses by event_id itself), so a fact emitted twice with different content counts once,
-- as its latest emission, and a filter on kind or time applies to that emission only.
CREATE VIEW IF NOT EXISTS {db}.order_events_latest AS
SELECT
    order_id,
    event_id,
    e_seq AS seq,
    e_kind AS kind,
    e_from_state AS from_state,
    e_to_state AS to_state,
    e_reason AS reason,
    e_at AS at,
    e_channel AS channel,
    e_shop_id AS shop_id,
    e_external_id AS external_id,
    e_warehouse AS warehouse,
    e_actor AS actor,
    e_alloc_sku AS alloc_sku,
    e_alloc_warehouse AS alloc_warehouse,
    e_alloc_qty AS alloc_qty,
    e_rev AS rev
FROM
(
    SELECT
        order_id,
        event_id,
        argMax(seq, rev) AS e_seq,
        argMax(kind, rev) AS e_kind,
        argMax(from_state, rev) AS e_from_state,
        argMax(to_state, rev) AS e_to_state,
        argMax(reason, rev) AS e_reason,
        argMax(at, rev) AS e_at,
        argMax(channel, rev) AS e_channel,
        argMax(shop_id, rev) AS e_shop_id,
        argMax(external_id, rev) AS e_external_id,
        argMax(warehouse, rev) AS e_warehouse,
        argMax(actor, rev) AS e_actor,
        argMax(alloc_sku, rev) AS e_alloc_sku,
        argMax(alloc_warehouse, rev) AS e_alloc_warehouse,
        argMax(alloc_qty, rev) AS e_alloc_qty,
        max(rev) AS e_rev
    FROM {db}.order_events
    GROUP BY order_id, event_id
)
;

-- Latest known state of every order, from its events (one row each, above): to_state of the
-- event with the highest seq among those that carry one; allocations of the latest event that
-- carries any (a cancel carries what it gave back); reserved_* = the order's current
-- reservation, the allocations of its latest RESERVED event (a re-reservation after a short
-- pick replaces the first, it does not add to it).
CREATE VIEW IF NOT EXISTS {db}.order_status AS
SELECT
    order_id,
    s_channel AS channel,
    s_shop_id AS shop_id,
    s_external_id AS external_id,
    s_state AS state,
    s_reason AS reason,
    s_seq AS seq,
    s_first_at AS first_at,
    s_last_at AS last_at,
    s_events AS events,
    s_alloc_sku AS alloc_sku,
    s_alloc_warehouse AS alloc_warehouse,
    s_alloc_qty AS alloc_qty,
    s_reserved_sku AS reserved_sku,
    s_reserved_warehouse AS reserved_warehouse,
    s_reserved_qty AS reserved_qty
FROM
(
    SELECT
        order_id,
        any(channel) AS s_channel,
        any(shop_id) AS s_shop_id,
        any(external_id) AS s_external_id,
        argMaxIf(to_state, seq, to_state != '') AS s_state,
        argMaxIf(reason, seq, to_state != '') AS s_reason,
        maxIf(seq, to_state != '') AS s_seq,
        min(at) AS s_first_at,
        max(at) AS s_last_at,
        count() AS s_events,
        argMaxIf(alloc_sku, seq, notEmpty(alloc_sku)) AS s_alloc_sku,
        argMaxIf(alloc_warehouse, seq, notEmpty(alloc_sku)) AS s_alloc_warehouse,
        argMaxIf(alloc_qty, seq, notEmpty(alloc_sku)) AS s_alloc_qty,
        argMaxIf(alloc_sku, seq, kind = 'reserved') AS s_reserved_sku,
        argMaxIf(alloc_warehouse, seq, kind = 'reserved') AS s_reserved_warehouse,
        argMaxIf(alloc_qty, seq, kind = 'reserved') AS s_reserved_qty
    FROM {db}.order_events_latest
    GROUP BY order_id
)
;

-- Latest snapshot of every order: the highest rev (newest seq, then the latest emission).
CREATE VIEW IF NOT EXISTS {db}.order_latest AS
SELECT
    order_id,
    o_version AS version,
    o_channel AS channel,
    o_shop_id AS shop_id,
    o_external_id AS external_id,
    o_channel_status AS channel_status,
    o_payment_status AS payment_status,
    o_created_at AS created_at,
    o_paid_at AS paid_at,
    o_currency AS currency,
    o_total AS total,
    o_paid_total AS paid_total,
    o_shipping_fee AS shipping_fee,
    o_discount_total AS discount_total,
    o_country AS country,
    o_province_code AS province_code,
    o_city AS city,
    o_line_count AS line_count,
    o_units AS units,
    o_buyer_hash AS buyer_hash
FROM
(
    SELECT
        order_id,
        argMax(version, rev) AS o_version,
        argMax(channel, rev) AS o_channel,
        argMax(shop_id, rev) AS o_shop_id,
        argMax(external_id, rev) AS o_external_id,
        argMax(channel_status, rev) AS o_channel_status,
        argMax(payment_status, rev) AS o_payment_status,
        argMax(created_at, rev) AS o_created_at,
        argMax(paid_at, rev) AS o_paid_at,
        argMax(currency, rev) AS o_currency,
        argMax(total, rev) AS o_total,
        argMax(paid_total, rev) AS o_paid_total,
        argMax(shipping_fee, rev) AS o_shipping_fee,
        argMax(discount_total, rev) AS o_discount_total,
        argMax(country, rev) AS o_country,
        argMax(province_code, rev) AS o_province_code,
        argMax(city, rev) AS o_city,
        argMax(line_count, rev) AS o_line_count,
        argMax(units, rev) AS o_units,
        argMax(buyer_hash, rev) AS o_buyer_hash
    FROM {db}.orders
    GROUP BY order_id
)
;

-- Lines of the latest snapshot of each order only: a line an update removed keeps an older
-- rev, and so does a line of an emission that a later emission of the same snapshot replaced.
CREATE VIEW IF NOT EXISTS {db}.order_lines_latest AS
SELECT
    order_id,
    line_id,
    l_version AS version,
    l_sku AS sku,
    l_channel_sku AS channel_sku,
    l_quantity AS quantity,
    l_unit_price AS unit_price,
    l_discount AS discount,
    l_paid_amount AS paid_amount,
    l_is_gift AS is_gift,
    l_currency AS currency,
    l_channel AS channel,
    l_shop_id AS shop_id,
    l_created_at AS created_at,
    l_province_code AS province_code
FROM
(
    SELECT
        order_id,
        line_id,
        max(rev) AS l_rev,
        argMax(version, rev) AS l_version,
        argMax(sku, rev) AS l_sku,
        argMax(channel_sku, rev) AS l_channel_sku,
        argMax(quantity, rev) AS l_quantity,
        argMax(unit_price, rev) AS l_unit_price,
        argMax(discount, rev) AS l_discount,
        argMax(paid_amount, rev) AS l_paid_amount,
        argMax(is_gift, rev) AS l_is_gift,
        argMax(currency, rev) AS l_currency,
        argMax(channel, rev) AS l_channel,
        argMax(shop_id, rev) AS l_shop_id,
        argMax(created_at, rev) AS l_created_at,
        argMax(province_code, rev) AS l_province_code
    FROM {db}.order_lines
    GROUP BY order_id, line_id
)
WHERE (order_id, l_rev) IN
(
    SELECT order_id, max(rev)
    FROM {db}.order_lines
    GROUP BY order_id
)
;

-- As in 0002 (it reads the views above).
CREATE VIEW IF NOT EXISTS {db}.sales_per_minute AS
SELECT
    toStartOfMinute(l_created_at) AS minute,
    l_channel AS channel,
    l_shop_id AS shop_id,
    l_sku AS sku,
    l_province_code AS province_code,
    l_currency AS currency,
    state,
    uniqExact(order_id) AS orders,
    sum(l_quantity) AS units,
    sum(l_paid_amount) AS gmv
FROM
(
    SELECT
        order_id,
        created_at AS l_created_at,
        channel AS l_channel,
        shop_id AS l_shop_id,
        sku AS l_sku,
        province_code AS l_province_code,
        currency AS l_currency,
        quantity AS l_quantity,
        paid_amount AS l_paid_amount
    FROM {db}.order_lines_latest
) AS l
ANY LEFT JOIN
(
    SELECT order_id, state
    FROM {db}.order_status
) AS s USING (order_id)
GROUP BY minute, channel, shop_id, sku, province_code, currency, state
;
