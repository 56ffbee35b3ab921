"""ac7.example.json is documentation that must stay loadable and must show every migration."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

from ac7_core.config_file import load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "ac7.example.json"
ENV = {"AC7_KEK": base64.b64encode(bytes(range(32))).decode()}


def test_example_loads_and_migrates_then_stays_put(tmp_path: Path) -> None:
    path = tmp_path / "ac7.json"
    shutil.copy(EXAMPLE, path)

    first = load_config(path, env=ENV)

    assert [s.name for s in first.config.slots] == ["alice", "builder", "reviewer", "pat"]
    assert {s.authority for s in first.config.slots} == {"director", "manager", "individual-contributor"}
    assert first.config.slot("pat") is not None and first.config.slot("pat").token_hash is None  # type: ignore[union-attr]
    assert "slots/builder/token hashed" in first.migrated
    assert "slots/alice/totpSecret encrypted" in first.migrated
    assert "webPush/vapidPrivateKey encrypted" in first.migrated
    on_disk = json.loads(path.read_text())
    assert on_disk["_comment"] == json.loads(EXAMPLE.read_text())["_comment"]
    assert on_disk["slots"][0]["_comment"].startswith("A director")
    before = path.read_bytes()

    second = load_config(path, env=ENV)

    assert second.migrated == ()
    assert path.read_bytes() == before
