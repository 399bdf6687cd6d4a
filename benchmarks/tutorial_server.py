"""ssh-auth-server as the tutorial's design works: verdicts learned only by a GET every 5 s."""

import sys

from webserver.__main__ import main

if __name__ == "__main__":
    sys.exit(main(poll_only=True))
