"""The SQLite store, the source of truth: schema, every SQL statement, migrations, records."""
