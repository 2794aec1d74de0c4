"""Webhooks: tell a seller, signed, when someone uploads a copy of one of its photos."""
