"""Ports on the host's loopback relayed into another network namespace: what a Docker daemon
started in a namespace of its own publishes there, the host reaches as if published on itself."""

import ctypes
import socket
import threading
from pathlib import Path

CLONE_NEWNET = 0x40000000


class RelayError(Exception):
    """A port could not be relayed; the message says which and why."""


class PortRelay:
    """127.0.0.1:PORT on the host, relayed to 127.0.0.1:PORT in another network namespace (where
    the daemon publishes the stack's ports), so the host sees them as `docker compose` promised."""

    def __init__(self, netns: Path, ports: tuple[int, ...]):
        self.netns, self.ports = netns, ports
        self.listeners: list[socket.socket] = []
        self.connections: list[socket.socket] = []
        self._lock = threading.Lock()

    def __enter__(self) -> "PortRelay":
        for port in self.ports:
            try:
                listener = socket.create_server(("127.0.0.1", port))
            except OSError as error:
                self.close()
                raise RelayError(
                    f"127.0.0.1:{port} is taken ({error.strerror}): is another "
                    "`docker compose up` of this stack running?"
                ) from None
            self.listeners.append(listener)
            threading.Thread(target=self._accept, args=(listener, port), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening and cut every relayed connection."""
        with self._lock:
            for sock in self.listeners + self.connections:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self.listeners, self.connections = [], []

    def _accept(self, listener: socket.socket, port: int) -> None:
        # This thread moves into the daemon's network namespace: the listener was made on the
        # host's and stays there; every upstream socket it makes from now on is in the other.
        with open(self.netns) as namespace:
            if ctypes.CDLL(None, use_errno=True).setns(namespace.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the daemon's network namespace")
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            upstream = socket.socket()
            try:
                upstream.connect(("127.0.0.1", port))
            except OSError:
                client.close()
                upstream.close()
                continue
            with self._lock:
                self.connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass
