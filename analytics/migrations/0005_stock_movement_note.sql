-- Who made an operator's stock change and why, as fields of their own. Before, both were
-- joined into `ref` (`op:by=actor:reason`): the reason's free text reached ClickHouse
-- unscrubbed, and the actor could be spoofed from inside the op id. `ref` now holds the
-- operation id alone; the ledger writes the actor (a user name, bounded) and the reason
-- (bounded, scrubbed of what may name a person) apart (state/stock.py movement_note).
--
-- ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS: run once by schema_migrations, both
-- columns in one ALTER (as 0003). Rows written before read '' for both.
ALTER TABLE {db}.stock_movements
    ADD COLUMN actor String DEFAULT '',
    ADD COLUMN reason String DEFAULT ''
;
