"""Two hubs at once on the test's database and broker, as a site running a standby does."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from hub.runtime import Hub, run_hub
from hub.settings import Settings


@contextlib.asynccontextmanager
async def two_hubs(
    settings: Settings,
    tmp_path: Path,
    *,
    shared: bool,
    each: Sequence[dict[str, Any]] = ({}, {}),
) -> AsyncIterator[list[Hub]]:
    """Hubs a and b, each with its own client id and spool, connected; `shared`: on one
    shared subscription; `each`: the further settings of a and of b."""
    hubs: list[Hub] = []
    async with contextlib.AsyncExitStack() as stack:
        for name, extra in zip(("a", "b"), each, strict=True):
            own = settings.model_copy(
                update={
                    "mqtt_client_id": f"{settings.mqtt_client_id}-{name}",
                    "mqtt_shared_group": f"g{settings.topic_root}" if shared else None,
                    "spool_dir": tmp_path / f"spool-{name}",
                    **extra,
                }
            )
            hub = await stack.enter_async_context(run_hub(own))
            await hub.wait_connected(15)
            hubs.append(hub)
        yield hubs
