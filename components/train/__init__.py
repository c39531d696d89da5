"""Fine-tune a BERT-style review-sentiment classifier (library, CLI `python -m components.train`, KFP component)."""
