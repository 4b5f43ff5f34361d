"""Resolvers of both APIs and the services they call (history, sessions, model, turn)."""
