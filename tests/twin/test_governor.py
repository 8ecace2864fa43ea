"""The governor over fake sysfs trees (power_supply and thermal), the CPU budget and the deferred queue."""

from __future__ import annotations

from pathlib import Path

from node.transports.ble.power import read_battery
from node.twin.governor import DeferredQueue, Governor, GovernorLimits, Readings, read_temperature_c


def fake_battery(root: Path, percent: int, status: str, ac_online: int | None = None) -> Path:
    bat = root / "power_supply" / "BAT0"
    bat.mkdir(parents=True)
    (bat / "type").write_text("Battery\n")
    (bat / "capacity").write_text(f"{percent}\n")
    (bat / "status").write_text(f"{status}\n")
    if ac_online is not None:
        ac = root / "power_supply" / "AC"
        ac.mkdir()
        (ac / "type").write_text("Mains\n")
        (ac / "online").write_text(f"{ac_online}\n")
    return root / "power_supply"


def fake_thermal(root: Path, *millideg: str) -> Path:
    for i, t in enumerate(millideg):
        z = root / "thermal" / f"thermal_zone{i}"
        z.mkdir(parents=True)
        (z / "temp").write_text(t + "\n")
    return root / "thermal"


def readings(tmp_path: Path, percent: int, status: str, *temps: str, ac: int | None = None) -> Readings:
    supply = fake_battery(tmp_path, percent, status, ac)
    return Readings(read_battery(supply, search_path=str(tmp_path)), read_temperature_c(fake_thermal(tmp_path, *temps)))


def test_low_battery_on_battery_pauses_with_the_reason(tmp_path: Path) -> None:
    g = Governor(GovernorLimits(min_battery_percent=30))
    g.update(readings(tmp_path, 12, "Discharging", "41000"))
    d = g.decide(0.0)
    assert not d.allowed and "battery 12 %" in d.reason


def test_low_battery_while_charging_is_allowed(tmp_path: Path) -> None:
    g = Governor(GovernorLimits(min_battery_percent=30))
    g.update(readings(tmp_path, 12, "Charging", "41000", ac=1))
    assert g.decide(0.0).allowed


def test_require_charging(tmp_path: Path) -> None:
    g = Governor(GovernorLimits(require_charging=True))
    g.update(readings(tmp_path, 90, "Discharging", "30000", ac=0))
    d = g.decide(0.0)
    assert not d.allowed and "charger" in d.reason


def test_hot_zone_pauses(tmp_path: Path) -> None:
    g = Governor(GovernorLimits(max_temp_c=45))
    g.update(readings(tmp_path, 90, "Full", "38000", "51500", "-274000"))
    d = g.decide(0.0)
    assert not d.allowed and "51.5 °C" in d.reason


def test_thermal_reader_ignores_garbage_and_missing(tmp_path: Path) -> None:
    assert read_temperature_c(tmp_path / "none") is None
    assert read_temperature_c(fake_thermal(tmp_path, "oops", "-274000", "43250")) == 43.25


def test_no_battery_information_allows(tmp_path: Path) -> None:
    g = Governor(GovernorLimits())
    empty = tmp_path / "ps"
    empty.mkdir()
    g.update(Readings(read_battery(empty, search_path=str(tmp_path)), None))
    assert g.decide(0.0).allowed


def test_cpu_budget_is_a_sliding_hour() -> None:
    g = Governor(GovernorLimits(cpu_budget_s_per_hour=10))
    g.charge(6.0, 100.0)
    assert g.decide(200.0).allowed
    g.charge(5.0, 1000.0)
    d = g.decide(1000.0)
    assert not d.allowed and "CPU budget" in d.reason
    assert g.next_budget_s(1000.0) > 0
    assert g.decide(100.0 + 3600.0 + 60.0).allowed  # the first minute left the window


def test_deferred_queue_bounded_in_entries_and_bytes() -> None:
    q: DeferredQueue[int] = DeferredQueue(max_entries=3, max_bytes=100)
    for i in range(5):
        q.push(i, 10)
    assert len(q) == 3 and q.dropped == 2 and q.pop() == 2
    q.push(99, 95)  # pushes the older ones out by bytes
    assert q.bytes <= 100 and q.pop() == 99
    q.push(7, 1000)  # larger than the whole bound: dropped
    assert q.pop() is None and q.dropped >= 5
