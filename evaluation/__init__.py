"""Offline measurements of the product's models on real data."""
