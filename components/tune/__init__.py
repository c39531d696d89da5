"""Katib-style hyper-parameter tuning: one search spec (`spec`), engines that run it (`engines`), the step (`core`)."""
