"""A load balancer's part on loopback: one public port, each new connection sent to the replica
the test chose (so a test can say "this approval is served by replica 2")."""

import socket
import threading

from .processes import free_port


class Balancer:
    """127.0.0.1:port in front of the given replica ports; route(i) picks where new connections go."""

    def __init__(self, ports: list[int]):
        self.ports, self.target = ports, 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener = socket.create_server(("127.0.0.1", self.port), backlog=256)
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def route(self, index: int) -> None:
        """Send every new connection to replica `index`."""
        self.target = index

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.ports[self.target]), timeout=5)
            except OSError:
                client.close()  # as a balancer with no healthy replica: the connection is reset
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            pair = [client, upstream, 2]  # both sockets, and the pipes still running
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink, pair), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, pair: list) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                pair[2] -= 1
                if pair[2] == 0:  # the last pipe of the pair closes both sockets
                    for sock in pair[:2]:
                        self._sockets.discard(sock)
                        sock.close()

    def close(self) -> None:
        """Stop accepting and cut every relayed connection."""
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, set()
        self._listener.close()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
