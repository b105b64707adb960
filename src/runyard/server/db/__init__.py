"""Persistence: tables, the one repository of queries, dialect differences."""
