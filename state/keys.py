"""Redis key layout. Keys of one sku share the hash tag ``{sku}`` so a Redis Cluster keeps a
sku's stock in one slot; order keys are tagged by order id for the same reason."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "oms"

    def stock(self, sku: str) -> str:
        """Hash: ``on_hand:<wh>`` and ``reserved:<wh>`` per warehouse."""
        return f"{self.prefix}:stock:{{{sku}}}"

    def ledger(self, sku: str) -> str:
        """Stream of every stock movement of the sku, written by the same script as the change."""
        return f"{self.prefix}:ledger:{{{sku}}}"

    @property
    def ledger_cursor(self) -> str:
        """Hash sku -> last ledger entry id shipped to ClickHouse."""
        return f"{self.prefix}:ledger-cursor"

    def order(self, order_id: str) -> str:
        return f"{self.prefix}:order:{{{order_id}}}"

    def external(self, channel: str, external_id: str) -> str:
        """Set of order ids for a channel's order number (shops may reuse numbers)."""
        return f"{self.prefix}:ext:{channel}:{external_id}"

    @property
    def skus(self) -> str:
        return f"{self.prefix}:skus"

    @property
    def stock_ops(self) -> str:
        """Hash op id -> fingerprint of the change it was used for (state/stock.py)."""
        return f"{self.prefix}:stock-ops"

    def dlq_seen(self, dlq_id: str) -> str:
        """When a DLQ record was first emitted (agents/pipeline.py): its redeliveries re-emit
        the same record, not one with a new time."""
        return f"{self.prefix}:dlq-seen:{dlq_id}"

    @property
    def dlq_replayed(self) -> str:
        """Set of DLQ ids already sent back through the pipeline by `./oms dlq replay`."""
        return f"{self.prefix}:dlq-replayed"

    @property
    def held(self) -> str:
        return f"{self.prefix}:held"

    @property
    def unpaid(self) -> str:
        """Zset of orders held because they are unpaid, scored by when they were first held so
        (agents/timers.py expires the old ones without reading every held record)."""
        return f"{self.prefix}:unpaid"

    @property
    def backorders(self) -> str:
        """Zset of orders held out of stock, scored by when they were first held less their
        priority's head start (agents/timers.py retries them, first score first, when stock
        arrives)."""
        return f"{self.prefix}:backorders"

    @property
    def deadlines(self) -> str:
        """Zset of orders still to ship, scored by their ship-by deadline (unix seconds): what
        `./oms orders late` and the late-orders metric read."""
        return f"{self.prefix}:deadlines"

    @property
    def backorder_skus(self) -> str:
        """Hash order id -> JSON {sku: units} of each backorder: what the retry timer checks
        against stock without loading records."""
        return f"{self.prefix}:backorder-skus"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    @property
    def pending(self) -> str:
        """Zset of orders whose saved decision's stock work is not known done, scored by when
        it was first left so (agents/timers.py sweeps the old ones)."""
        return f"{self.prefix}:pending"

    @property
    def closing(self) -> str:
        """Zset of delivered orders, scored by when their after-sales window ends."""
        return f"{self.prefix}:closing"

    def merge_group(self, group: str) -> str:
        """Set of the orders waiting in one merge window (same shop, buyer, address, warehouse)."""
        return f"{self.prefix}:merge:{{{group}}}"

    @property
    def merge_due(self) -> str:
        """Zset of merge group keys, scored by when their window closes."""
        return f"{self.prefix}:merge-due"

    def velocity_buyer(self, digest: str) -> str:
        """Sorted set order id -> created_at of one buyer's recent orders (state/velocity.py);
        named by a hash of channel, shop and buyer id, never the id itself."""
        return f"{self.prefix}:velocity:buyer:{digest}"

    def velocity_address(self, digest: str) -> str:
        """Sorted set order id -> created_at of recent orders to one address, named by a hash
        of the normalised province, city and street."""
        return f"{self.prefix}:velocity:address:{digest}"

    def token(self, token_id: str) -> str:
        """Hash of one access token (state/tokens.py): user, role, shops, salt, hash, created_at,
        revoked. Never the secret."""
        return f"{self.prefix}:token:{token_id}"

    @property
    def tokens(self) -> str:
        """Set of every token id ever granted (revoked ones stay, for the audit trail)."""
        return f"{self.prefix}:tokens"
