"""Patch scorers: one protocol (:mod:`.base`), implementations registered by name (:mod:`.registry`)."""
