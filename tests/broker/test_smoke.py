from __future__ import annotations

import aiohttp
from broker_harness import Running


async def test_healthz_and_roster(broker: Running, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{broker.url}/healthz") as r:
        assert r.status == 200
        assert (await r.json())["status"] == "ok"
    async with http.get(f"{broker.url}/roster", headers=broker.auth("alice")) as r:
        assert r.status == 200
        names = [m["name"] for m in (await r.json())["teammates"]]
    assert names == ["alice", "mike", "ivy", "dan", "hana"]
