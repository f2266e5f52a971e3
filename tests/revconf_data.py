"""What the review revconf proofs share: a manual tunnel's section (tests/e2e/test_review_revconf_*.py,
tests/conf/test_review_revconf_folders.py)."""

from __future__ import annotations


def manual_tunnel(name: str = "t", n: int = 1, remote_net: str = "10.2.0.0/24") -> str:
    """A `manual { }` section of one tunnel between 192.0.2.1 and .2 (TwoHosts' outer addresses); n makes its SPIs
    and keys its own."""
    return f"""manual {{
  {name} {{
    local_addr = 192.0.2.1
    remote_addr = 192.0.2.2
    local_ts = 10.1.0.0/24
    remote_ts = {remote_net}
    spi_in = {0xC0C00000 + n:#x}
    key_in = 0x{n:02x}02030405060708090a0b0c0d0e0f1011121314
    spi_out = {0xC0D00000 + n:#x}
    key_out = 0x{n:02x}131415161718191a1b1c1d1e1f202122232425
  }}
}}
"""
