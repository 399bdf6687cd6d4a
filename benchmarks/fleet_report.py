"""The fleet benchmark's table: deliveries, latency and cost, with the targets beside them."""

from benchmarks.__main__ import percentile
from benchmarks.fleet_load import (
    APPROVERS,
    Login,
)


def report(figures: dict, count: int) -> int:
    """Print the table; 0 if every login was allowed, on the right host."""
    logins = figures["logins"]
    ok = [x for x in logins if x.verdict and x.answered and not x.denied]
    rows = delivery_rows(figures, ok, count) + latency_rows(figures, ok) + cost_rows(figures, count)
    print("\n| measure (fleet mode) | target | result |")
    print("|---|---|---|")
    for name, target, result in rows:
        print(f"| {name} | {target} | {result} |")
    print(
        "\nPOST answered → allow is below zero when the allow reached the login before the phone"
        "\nhad the answer to its POST: the hub commits and announces the verdict, then answers."
    )
    for failure in figures["failures"]:
        print(f"failed: {failure}")
    checked = figures["deliveries"]
    right = checked["own_host"] == checked["after_own"] == len(logins) and checked["only_own"] == 4
    return 0 if len(ok) == len(logins) and right else 1


def delivery_rows(figures: dict, ok: list[Login], count: int) -> list[tuple[str, str, str]]:
    checked, served = figures["deliveries"], figures["served"]
    kinds = [sum(x.kind == kind for x in ok) for kind in ("socket", "sshd")]
    return [
        ("logins waiting at once (hub's table), over 4 hosts", f"{count}", f"{figures['waiting']}"),
        ("time to get them all waiting", "", f"{figures['to_wait']:.1f} s"),
        (
            f"approvals ({APPROVERS} phones at once) finished by replica 1 / replica 2",
            "",
            f"{served[0]} / {served[1]} in {figures['to_approve']:.1f} s",
        ),
        (
            "allowed (socket logins + whole logins through sshd)",
            "all",
            f"{len(ok)}/{count} ({kinds[0]} + {kinds[1]})",
        ),
        (
            "check created on the login's own host, for its user (hub's table)",
            "all",
            f"{checked['own_host']}/{count}",
        ),
        (
            "hosts whose agent allowed exactly its own logins (agent logs)",
            "all",
            f"{checked['only_own']}/4",
        ),
        ("allow arrived after its own phone pressed Approve", "all", f"{checked['after_own']}/{count}"),
    ]


def latency_rows(figures: dict, ok: list[Login]) -> list[tuple[str, str, str]]:
    def ms(values, q):
        return f"{percentile(values, q) * 1000:.1f} ms" if values else "n/a"

    def both(values):
        return f"{ms(values, 50)} / {ms(values, 99)}"

    after_post = [x.verdict - x.answered for x in ok]
    socket = [x.verdict - x.answered for x in ok if x.kind == "socket"]
    whole = [x for x in ok if x.kind == "sshd"]
    return [
        ("approval POST answered → allow at the login, p50", "< 20 ms", ms(after_post, 50)),
        ("approval POST answered → allow at the login, p99", "< 200 ms", ms(after_post, 99)),
        ("approval POST answered → allow at the login, max", "", ms(after_post, 100)),
        (
            "Approve pressed (POST sent) → allow at the login, p50 / p99",
            "",
            both([x.verdict - x.pressed for x in ok]),
        ),
        ("socket logins (the shim's code): POST answered → allow, p50 / p99", "", both(socket)),
        (
            "whole logins: POST answered → verdict line at the ssh client, p50 / p99",
            "",
            both([x.verdict - x.answered for x in whole]),
        ),
        (
            "whole logins: POST answered → the command's output at the client, p50 / p99",
            "",
            both([x.shell - x.answered for x in whole]),
        ),
        (
            "allow stored by a replica → sent by the host's agent (their logs), p50 / p99",
            "",
            both(figures["relayed"]),
        ),
    ]


def cost_rows(figures: dict, count: int) -> list[tuple[str, str, str]]:
    creating, idling, approving = figures["cpu"]
    asked = figures["requests"]
    idle = figures["idle"]
    rss = (figures["rss_before"] / 1024, figures["rss_peak"] / 1024)
    per_login_kb = (figures["rss_peak"] - figures["rss_before"]) / count
    connections = (figures["connections_before"], figures["connections_peak"])
    return [
        (
            "hub CPU (both replicas), creating the logins",
            "",
            f"{creating:.1f} s ({creating / count * 1000:.1f} ms per login)",
        ),
        (
            f"hub CPU while all {count} wait",
            "",
            f"{idling / idle * 100:.0f}% of a core ({idling / idle / count * 1e6:.0f} µs/s per login)",
        ),
        (
            "hub CPU, approving and delivering",
            "",
            f"{approving:.1f} s ({approving / count * 1000:.1f} ms per login)",
        ),
        (
            "agents' signed requests to the hub per login: creating / waiting / approving",
            "",
            " / ".join(f"{n / count:.2f}" for n in asked),
        ),
        (
            "hub RSS (both replicas): before → peak",
            "",
            f"{rss[0]:.0f} MB → {rss[1]:.0f} MB ({per_login_kb:.0f} kB per waiting login)",
        ),
        (
            "database connections (ssh_auth): before → peak",
            "",
            f"{connections[0]} → {connections[1]} ({connections[1] / count:.3f} per waiting login)",
        ),
        (
            "single server (benchmarks/README.md): verdict-to-shell median; 200 at once p99",
            "",
            "4 ms; 12 ms",
        ),
        (
            "the tutorial (measured above): verdict-to-shell median, phones 0–5 s; phone instant",
            "",
            "2.64 s; 5.0 s",
        ),
    ]
