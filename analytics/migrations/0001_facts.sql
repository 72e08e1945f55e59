-- Fact tables. Runs on ClickHouse 18.16 (local stack) and current (production, chdb test):
-- no DateTime64, no TTL, no LowCardinality, no Bool; DateTime('UTC') so a naive UTC value
-- means the same instant whatever the server time zone is.
--
-- Replay safety: every table is a ReplacingMergeTree whose sorting key ends with the fact's
-- deterministic id, so a replayed row collapses on merge. Merges happen "eventually", so the
-- report queries never rely on them: they dedupe by id themselves (argMax by seq/version,
-- uniqExact by id, GROUP BY id), which is also right when a replay changed a non-key column.
-- {db} is replaced by the quoted database name (views need qualified names).

CREATE TABLE IF NOT EXISTS {db}.order_events
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
    ingested_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(at)
ORDER BY (channel, at, event_id)
;

CREATE TABLE IF NOT EXISTS {db}.orders
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
    ingested_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(created_at)
ORDER BY (channel, toDate(created_at), order_id)
;

CREATE TABLE IF NOT EXISTS {db}.order_lines
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
    ingested_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(created_at)
ORDER BY (channel, toDate(created_at), order_id, line_id)
;

-- Never the payload: it may carry names, phones and addresses.
CREATE TABLE IF NOT EXISTS {db}.dlq
(
    dlq_id String,
    reason String,
    detail String,
    source_topic String,
    source_partition Int32,
    source_offset Int64,
    channel String,
    received_at DateTime('UTC'),
    ingested_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(received_at)
ORDER BY (reason, received_at, dlq_id)
;

-- Written by the stock layer (load, adjust, reserve, release, commit, ...).
CREATE TABLE IF NOT EXISTS {db}.stock_movements
(
    movement_id String,
    sku String,
    warehouse String,
    kind String,
    on_hand_delta Int64,
    reserved_delta Int64,
    ref String,
    at DateTime('UTC'),
    ingested_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(at)
ORDER BY (sku, warehouse, movement_id)
;
