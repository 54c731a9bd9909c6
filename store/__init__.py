"""The store: the only code that opens the database (SQLite by default, any SQLAlchemy URL)."""
