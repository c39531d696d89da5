"""feast_ingest: register the review entity and BERT feature view, write the offline and online stores."""
