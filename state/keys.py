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

    def reservation(self, order_id: str) -> str:
        """JSON of the order's allocations and status; its existence makes reserve idempotent."""
        return f"{self.prefix}:res:{{{order_id}}}"

    def order(self, order_id: str) -> str:
        return f"{self.prefix}:order:{{{order_id}}}"

    def external(self, channel: str, external_id: str) -> str:
        """Set of order ids for a channel's order number (shops may reuse numbers)."""
        return f"{self.prefix}:ext:{channel}:{external_id}"

    @property
    def skus(self) -> str:
        return f"{self.prefix}:skus"

    @property
    def held(self) -> str:
        return f"{self.prefix}:held"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"
