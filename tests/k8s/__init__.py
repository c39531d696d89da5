"""Tests that talk to a real Kubernetes API server (see docs/k8s-tests.md)."""
