"""Pieces shared by two or more steps: schema, IO, configuration."""
