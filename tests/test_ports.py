"""Listener ports come from below the ephemeral range, where outgoing connections never take them."""

from __future__ import annotations

import socket
from pathlib import Path

from testbed.ports import free_ports, listener_range


def test_listener_ports_are_below_the_ephemeral_range(tmp_path: Path) -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20
    span = listener_range()
    if span:  # Linux: the range file exists
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        assert all(port in span and port < low for port in ports)
    for port in ports:  # free: each can be bound now
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_the_range_follows_the_kernel_setting(tmp_path: Path) -> None:
    setting = tmp_path / "ip_local_port_range"
    setting.write_text("32768\t60999\n")
    assert listener_range(setting) == range(22768, 32768)
    setting.write_text("15000 60999\n")
    assert listener_range(setting) == range(10000, 15000)
    setting.write_text("garbage\n")
    assert listener_range(setting) == range(0)
    assert listener_range(tmp_path / "missing") == range(0)


def test_with_nothing_below_the_ephemeral_range_the_reserved_ports_are_used(tmp_path: Path) -> None:
    """The loadgen pod opens the range to 1024-65535 and reserves ports for its own listeners."""
    setting, reserved = tmp_path / "ip_local_port_range", tmp_path / "ip_local_reserved_ports"
    setting.write_text("1024\t65535\n")
    reserved.write_text("5557,5560-5579\n")
    assert list(listener_range(setting, reserved)) == [5557, *range(5560, 5580)]
    reserved.write_text("\n")  # none reserved: nothing safe, the kernel chooses (free_ports' fallback)
    assert list(listener_range(setting, reserved)) == []
    setting.write_text("32768 60999\n")  # below the range first, as everywhere else
    assert listener_range(setting, reserved) == range(22768, 32768)
