"""Supervision reports (SPEC §1): the monthly report as PDF and XLSX."""
