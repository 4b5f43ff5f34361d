"""What knows nothing of HTTP or GraphQL: settings, errors, Redis keys, history,
sessions, turns, the model, rate limits and the Redis connection."""
