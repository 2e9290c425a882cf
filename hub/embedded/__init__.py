"""Embedded services: an in-process MQTT broker and a PostgreSQL shipped in a wheel."""
