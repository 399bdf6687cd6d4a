"""What one host may ask of one replica: requests a second, items of audit a second, long-polls at
once. A host gone bad (its key stolen) cannot take the replica's threads, disk or database
from the other hosts and the phones."""

from ..policy import TokenBuckets, Waiting

REQUESTS = (1000, 100.0)  # (burst, per second) of signed requests per host and replica
AUDIT_ITEMS = (1000, 20.0)  # forwarded decisions per host and replica
LONG_POLLS = 2  # verdict long-polls held at once per host and replica (an agent holds one)


class HostLimits:
    """The limits of one replica, per host."""

    def __init__(self):
        self.requests = TokenBuckets(*REQUESTS)
        self.audit_items = TokenBuckets(*AUDIT_ITEMS)
        self.long_polls = Waiting({"long_polls": LONG_POLLS})
