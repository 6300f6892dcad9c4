"""AUTOMATIC1111's `/sdapi/v1` API (routes.py), translated onto our graphs and queue."""
