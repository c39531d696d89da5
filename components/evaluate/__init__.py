"""Evaluate the trained classifier on the test split and decide whether to deploy it."""
