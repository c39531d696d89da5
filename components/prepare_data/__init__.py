"""Prepare product reviews for the pipeline."""
