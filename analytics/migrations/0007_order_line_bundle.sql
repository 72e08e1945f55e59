-- Bundles (组合商品/套装, docs/decisions/0026-bundles.md): a channel line of a bundle code lands
-- as one order line per component (its sku, its share of what was paid), and these columns say
-- which bundle it came from: the channel's bundle code and the bundle line's id ('' for a line
-- that is no bundle's part). Sales per sku still add up to the order's paid total; sales per
-- bundle group by these.
--
-- ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS: run once by schema_migrations, both
-- columns in one ALTER (as 0003 and 0005). Rows written before read '' for both.
ALTER TABLE {db}.order_lines
    ADD COLUMN bundle String DEFAULT '',
    ADD COLUMN bundle_line_id String DEFAULT ''
;
