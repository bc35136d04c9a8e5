"""Helpers that start real servers (OpenLDAP, an OpenID provider) for tests."""
