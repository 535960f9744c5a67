"""The job database: models, sessions and migrations."""
