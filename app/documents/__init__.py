"""Known GraphQL documents by their SHA-256: automatic persisted queries and trusted documents."""
