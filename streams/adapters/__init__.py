"""What every channel adapter is built from (base.py): decoding, error reasons, sku mapping, money
and time parsing, the drafts an adapter assembles an Order from.

The adapters themselves, one per channel, and ``adapt`` are in streams/channels/.
"""
