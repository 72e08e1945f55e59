-- The stock ledger carries four figures per movement (state/lua/common.lua): on hand, reserved,
-- purchase in transit (inbound) and sales in transit (sit). 0001 stored only the first two, so
-- `./oms verify` could not prove the other two once the ledger streams are trimmed.
--
-- ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS: this statement is not re-runnable by
-- itself. Idempotency comes from schema_migrations (a version is run once); both columns are
-- added by one ALTER so the table never has only one of them. Rows written before this
-- migration read 0, which is right: they came from loads/adjusts/reserves that never moved
-- either figure (nothing shipped movements before the ledger shipper existed).
ALTER TABLE {db}.stock_movements
    ADD COLUMN inbound_delta Int64 DEFAULT 0,
    ADD COLUMN sit_delta Int64 DEFAULT 0
;
