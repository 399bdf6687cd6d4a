"""Our own service, configured to learn verdicts only by polling (as the tutorial's design does).

Not the tutorial: its bash script and Node webhook are measured separately (see README.md). This
variant keeps everything of ours (token cache, broker, webhook) and changes one thing: the
waiting login ignores the webhook's hand-off and GETs the check every poll_interval, so the
benchmarks can show what polling alone costs.
"""

import select
import sys
import time

from webserver import reasons
from webserver.__main__ import main
from webserver.flow import CheckFlow
from webserver.logins import deny


class PollOnlyFlow(CheckFlow):
    """Waits by polling the API every poll_interval; never woken by the webhook."""

    def wait(self, sock, login):
        """The verdict the first GET after it was made sees, or the deadline's."""
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
        next_poll = login.created + self.settings.poll_interval
        while True:
            now = time.monotonic()
            if now >= login.deadline:
                self.logins.finish(login.check_id, deny(reasons.EXPIRED))
                return login.verdict
            if now >= next_poll:
                self.poll(login)
                if login.verdict:
                    return login.verdict
                next_poll = time.monotonic() + self.settings.poll_interval
                continue
            if poller.poll(max(0, min(login.deadline, next_poll) - now) * 1000):
                self.logins.finish(login.check_id, deny(reasons.ABANDONED))
                return login.verdict


if __name__ == "__main__":
    sys.exit(main(flow_class=PollOnlyFlow))
