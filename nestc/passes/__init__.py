"""Passes over a :class:`~nestc.ir.Network`: one file each, acting on channel spaces and masks."""
