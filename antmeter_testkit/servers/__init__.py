"""Real loopback HTTP servers that speak the documented wire formats of external APIs, for tests."""
