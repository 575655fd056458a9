"""free_port: ports for the servers the stack, the sinks and the tests start."""

import socket

from agent_exporter import ports


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range():
    """Below the range the kernel takes source ports and bind(0) ports from, so nothing but a server
    asking for one can take it between its choice and its bind."""
    ephemeral_start = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    chosen = [ports.free_port() for _ in range(200)]
    assert len(set(chosen)) == len(chosen)
    assert all(20000 <= port < ephemeral_start for port in chosen)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", chosen[-1]))


def test_a_port_in_use_is_skipped(monkeypatch):
    with socket.socket() as held:
        for port in range(21000, 22000):
            try:
                held.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
        held.listen()
        offered = []
        choice = ports.random.choice

        def busy_first(candidates):
            offered.append(port if len(offered) < 3 else choice(candidates))
            return offered[-1]

        monkeypatch.setattr(ports.random, "choice", busy_first)
        assert ports.free_port() != port and offered[:3] == [port] * 3
