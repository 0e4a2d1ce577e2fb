"""Example applications built on seawall. Run one with ``seawall demo`` (the shop) or
``seawall run examples.shop.app:app``."""
