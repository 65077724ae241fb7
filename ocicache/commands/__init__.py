"""CLI command modules: each parses options, calls one api function and renders the result."""
