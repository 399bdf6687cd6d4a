"""Soak: many logins with mixed outcomes at once; the audit log must match every one of them."""

import json
import os
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.deployment import USERS, Gate
from harness.people import PhoneHolder

PLAN = ["approve", "wrong SIM", "deny", "unregistered"]
EXPECTED = {"approve": "allowed", "wrong SIM": "denied", "deny": "denied", "unregistered": "denied"}


def one_login(gate, number: int, slots: dict) -> dict:
    kind = PLAN[number % len(PLAN)]
    user = "sa-carol" if kind == "unregistered" else ("sa-alice", "sa-bob")[number % 2]
    marker = f"/tmp/sa-ran-{uuid.uuid4().hex}"
    with slots[user]:  # the service waits for at most 3 logins per user at once
        session = gate.ssh(user, f"touch {marker}")
        check_id = None
        if kind != "unregistered":
            url = session.check_url(timeout=60)
            check_id = url.split("/checks/")[1].split("/")[0]
            holder = PhoneHolder("447700900999" if kind == "wrong SIM" else USERS[user])
            (holder.deny if kind == "deny" else holder.approve)(url)
        status, _, _ = session.finish(timeout=90)
    ran = os.path.exists(marker)
    return {"kind": kind, "user": user, "check_id": check_id, "status": status, "ran": ran}


@pytest.mark.parametrize(
    "logins", [pytest.param(40, id="quick"), pytest.param(200, id="full", marks=pytest.mark.slow)]
)
def test_soak_every_outcome_is_audited_as_expected(emulator_server, logins):
    audit = f"/tmp/sa-audit-{uuid.uuid4().hex}.jsonl"
    try:
        with Gate(emulator_server, settings={"audit_log": audit}) as gate:
            emulator_server.reset()
            slots = {user: threading.Semaphore(3) for user in USERS}
            with ThreadPoolExecutor(max_workers=8) as pool:
                results = list(pool.map(lambda n: one_login(gate, n, slots), range(logins)))
        with open(audit, encoding="utf-8") as handle:
            lines = [json.loads(line) for line in handle]
    finally:
        if os.path.exists(audit):
            os.unlink(audit)
    # What the users saw: only approved logins ran their command.
    for result in results:
        should_run = result["kind"] == "approve"
        assert (result["status"] == 0, result["ran"]) == (should_run, should_run), result
    # What the audit log says: one line per login, each with the outcome the test expected.
    assert len(lines) == logins
    by_check = {line["check_id"]: line for line in lines if line["check_id"]}
    for result in results:
        if result["check_id"]:
            line = by_check[result["check_id"]]
            assert (line["user"], line["outcome"]) == (result["user"], EXPECTED[result["kind"]]), line
    unregistered = [line for line in lines if not line["check_id"]]
    assert Counter(line["outcome"] for line in unregistered) == {"denied": logins // 4}
    assert all(
        set(line) >= {"time", "user", "uid", "client", "check_id", "outcome", "reason", "duration"}
        for line in lines
    )
