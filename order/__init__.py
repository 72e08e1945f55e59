"""The order domain, pure: the order record and its state machine, audit, promotions,
routing and carriers, allocation, merge, fulfilment commands, WMS answers, after-sales and the
decisions the pipeline carries out. No Redis, Kafka or ClickHouse here: every rule is testable
with plain objects and a clock."""
