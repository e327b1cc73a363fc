"""The one place that talks SQL: tables, engine, migrations and the stores."""
