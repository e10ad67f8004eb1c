"""Simulated instrument: caproto IOCs sharing one physical world model.

``models/`` holds the physics (no EPICS), ``ioc/`` the caproto PV groups that serve
the standard interfaces over it, ``server.py`` runs them all in one process.
"""
