-- Fulfilment and after-sales facts, and a per-minute sales table kept by a materialized view.
-- Same rules as 0001: ClickHouse 18.16 and current (no DateTime64, TTL, LowCardinality, Bool,
-- Map), DateTime('UTC'), ReplacingMergeTree with the sorting key ending in the fact's id, and
-- queries that dedupe by that id themselves instead of trusting merges.

-- One row per command on oms.fulfilment.commands. Never ship_to, buyer_remark or anything
-- else that names a person: only what the warehouse was asked to do.
CREATE TABLE IF NOT EXISTS {db}.fulfilment_commands
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
    ingested_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(created_at)
ORDER BY (warehouse, toDate(created_at), command_id)
;

-- One row per event on oms.wms.events (accepted, shipped, short_pick, return_received, ...).
CREATE TABLE IF NOT EXISTS {db}.wms_events
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
    ingested_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(at)
ORDER BY (warehouse, toDate(at), event_id)
;

-- One row per request on oms.aftersales. Of an address change only the region is kept
-- (province code, city): never name, phone, street or district; never the free-text reason.
-- amount is NULL when the request named none (refund the lines' paid amount).
CREATE TABLE IF NOT EXISTS {db}.aftersales_requests
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
    ingested_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(at)
ORDER BY (kind, toDate(at), request_id)
;

-- Per-minute sales, one row per order line version, filled by the materialized view below.
--
-- Why this MV is replay-safe where the aggregating rollup 0002 rejects is not: an MV sees each
-- INSERT into order_lines, so a replayed batch arrives here twice, and an order update arrives
-- as a new version of its lines. Nothing is summed on the way in: the target keeps every
-- line's identity (order_id, line_id) and version, its sorting key ends with that identity,
-- and ReplacingMergeTree(version) collapses a replayed copy (same version) and an older
-- version of the same line on merge. Queries never wait for merges: they take argMax by
-- version per (order_id, line_id), keep only the order's latest version (an update that
-- removed a line leaves the old version behind), and only then sum. A SummingMergeTree or
-- AggregatingMergeTree target would have added the replayed copy for good.
CREATE TABLE IF NOT EXISTS {db}.sales_by_minute
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
    paid_amount Decimal(18, 4)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, channel, order_id, line_id)
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
    paid_amount
FROM {db}.order_lines
;

-- Backfill what order_lines held before the view existed. Re-runnable: a second run (two
-- workers migrating at once, or a crash before the bookkeeping row) only adds copies that
-- collapse like any replay; a line inserted between the view and this statement lands twice,
-- equally harmless.
INSERT INTO {db}.sales_by_minute
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
    paid_amount
FROM {db}.order_lines
;
