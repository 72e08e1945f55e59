-- Replay-safe read models as plain (non-materialized) views, shared by the report and analysts.
--
-- Why no materialized per-minute rollup: an MV sees each INSERT, not the deduplicated table,
-- so a replayed batch is counted twice; and an order UPDATE (new version, lines changed or
-- removed) cannot subtract what an earlier version added. uniqExactState would fix order
-- counts but not units or money. So the views below dedupe at query time (argMax by
-- seq/version, GROUP BY id), which is exact before any merge and after any replay.
--
-- Column aliases never reuse a source column name inside the same SELECT: ClickHouse resolves
-- aliases globally, so "argMax(sku, version) AS sku" nests the aggregate in itself.

-- Latest known state of every order: to_state of the event with the highest seq among events
-- that carry a to_state; allocations of the latest event that carries any.
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
    s_alloc_qty AS alloc_qty
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
        uniqExact(event_id) AS s_events,
        argMaxIf(alloc_sku, seq, notEmpty(alloc_sku)) AS s_alloc_sku,
        argMaxIf(alloc_warehouse, seq, notEmpty(alloc_sku)) AS s_alloc_warehouse,
        argMaxIf(alloc_qty, seq, notEmpty(alloc_sku)) AS s_alloc_qty
    FROM {db}.order_events
    GROUP BY order_id
)
;

-- Latest version of every order (replays of a version carry identical values).
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
        max(version) AS o_version,
        argMax(channel, version) AS o_channel,
        argMax(shop_id, version) AS o_shop_id,
        argMax(external_id, version) AS o_external_id,
        argMax(channel_status, version) AS o_channel_status,
        argMax(payment_status, version) AS o_payment_status,
        argMax(created_at, version) AS o_created_at,
        argMax(paid_at, version) AS o_paid_at,
        argMax(currency, version) AS o_currency,
        argMax(total, version) AS o_total,
        argMax(paid_total, version) AS o_paid_total,
        argMax(shipping_fee, version) AS o_shipping_fee,
        argMax(discount_total, version) AS o_discount_total,
        argMax(country, version) AS o_country,
        argMax(province_code, version) AS o_province_code,
        argMax(city, version) AS o_city,
        argMax(line_count, version) AS o_line_count,
        argMax(units, version) AS o_units,
        argMax(buyer_hash, version) AS o_buyer_hash
    FROM {db}.orders
    GROUP BY order_id
)
;

-- Lines of the latest version of each order only: a line an update removed keeps its old
-- version in order_lines, and the version filter drops it.
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
        max(version) AS l_version,
        argMax(sku, version) AS l_sku,
        argMax(channel_sku, version) AS l_channel_sku,
        argMax(quantity, version) AS l_quantity,
        argMax(unit_price, version) AS l_unit_price,
        argMax(discount, version) AS l_discount,
        argMax(paid_amount, version) AS l_paid_amount,
        argMax(is_gift, version) AS l_is_gift,
        argMax(currency, version) AS l_currency,
        argMax(channel, version) AS l_channel,
        argMax(shop_id, version) AS l_shop_id,
        argMax(created_at, version) AS l_created_at,
        argMax(province_code, version) AS l_province_code
    FROM {db}.order_lines
    GROUP BY order_id, line_id
)
WHERE (order_id, l_version) IN
(
    SELECT order_id, max(version)
    FROM {db}.order_lines
    GROUP BY order_id
)
;

-- Per-minute sales (order placement minute) by channel, shop, sku, province, currency and the
-- order's latest state; filter on state for accepted-only figures. gmv is the lines' paid
-- amount (shipping excluded; the report's gmv_by_channel uses order totals instead).
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
