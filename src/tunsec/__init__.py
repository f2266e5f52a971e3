"""tunsec: userspace IPsec VPN."""

__version__ = "0.1.0"
