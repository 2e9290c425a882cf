"""Storage: the psycopg pool, schema migrations, COPY writers and typed queries."""
