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
    def dlq_replayed(self) -> str:
        """Set of DLQ ids already sent back through the pipeline by `./oms dlq replay`."""
        return f"{self.prefix}:dlq-replayed"

    @property
    def held(self) -> str:
        return f"{self.prefix}:held"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"
