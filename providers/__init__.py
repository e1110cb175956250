"""Providers: one subpackage per system the core reconciles.

``lab`` simulates a whole hybrid environment in-process; ``graph`` and
``entraconnect`` talk to the real tenant and server. Heavy SDKs are imported only
inside the subpackage that needs them.
"""
