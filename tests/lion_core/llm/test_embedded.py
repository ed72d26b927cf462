import contextlib
import random
import socket

from lion_core.llm.embedded import ephemeral_low, free_port


def _bind(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def test_free_port_is_outside_the_range_outgoing_connections_use():
    low = ephemeral_low()
    port = free_port()
    assert low > 20_000 and 20_000 <= port < low
    with contextlib.closing(_bind(port)):  # and it is free
        pass


def test_free_port_skips_a_port_in_use():
    taken = free_port(random.Random(3))  # the port this seed draws first
    with contextlib.closing(_bind(taken)):
        port = free_port(random.Random(3))
    assert port != taken and 20_000 <= port < ephemeral_low()
