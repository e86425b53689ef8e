"""Everything SQL: tables, engines, value codecs, queries, the read-only repository, the
history recorder, migrations and synthetic history. It knows neither the graph nor the registry."""
