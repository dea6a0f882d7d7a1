"""The acefarm contract: REST bodies, Kafka events, topic names and their JSON Schemas.

This package imports no service; every service imports it.
"""
