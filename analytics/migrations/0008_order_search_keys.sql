-- Customer service finds orders by the buyer's phone (issue 16 item 9), and a phone must never
-- be stored in clear in ClickHouse. Two keyed hashes (the OMS_ANALYTICS_SALT key of
-- buyer_hash, analytics/facts.py phone_keys) of the receiver's phone, else the buyer's:
--   phone_hash  the whole normalised number, when the channel sent it plain ('' otherwise)
--   phone_key   its first 3 and last 4 digits, which a platform's mask keeps too
--               (138****8000), so a plain number and its masked form meet there
-- Encrypted phones give neither: only the platform can read them. Rows written before read ''
-- for both (orders from before this migration are not found by phone until updated).
--
-- ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS: run once by schema_migrations, both
-- columns in one ALTER (as 0003, 0005).
ALTER TABLE {db}.orders
    ADD COLUMN phone_hash String DEFAULT '',
    ADD COLUMN phone_key String DEFAULT ''
;
