"""featurize: BERT token ids (unpadded), class ids and a stratified train/validation/test split."""
