"""Storage: the psycopg pool, schema migrations, COPY writers and typed queries.

All of the hub's SQL lives here, one module per table family: `registry` (facilities,
zones, devices), `writer` (readings, events, device state), `alerts`, `audit`, `live`
(live_changes), `notifications` (outbox, webhooks), `timers`, `rules`, `accounts`; and
the readers that join several for a screen: `status`, `kpis`, `api_queries`.
"""
