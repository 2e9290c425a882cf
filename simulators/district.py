"""A seeded, Wenzhou-like district of facilities, zones and devices (the SPEC §5 registry)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from devices import CATALOGUE, CLASS_LIMITS
from devices.registry_files import (
    DEVICE_COLUMNS,
    FACILITY_COLUMNS,
    ZONE_COLUMNS,
    Zone,
)


@dataclass(frozen=True, slots=True)
class Facility:
    """One facility row of the facilities import file."""

    id: str
    name: str
    kind: str
    district: str
    address: str
    latitude: float
    longitude: float
    registration_no: str
    beds: int | None
    childcare_places: int | None


@dataclass(frozen=True, slots=True)
class Device:
    """One device row of the devices import file."""

    id: str
    facility_id: str
    type: str
    zone_id: str | None
    heartbeat_s: int | None
    vendor: str | None
    model: str | None


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def _write(path: Path, columns: Sequence[str], rows: Sequence[Any]) -> None:
    # newline="" lets the csv module own line endings, as its documentation asks.
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_value(getattr(row, column)) for column in columns])


@dataclass(frozen=True, slots=True)
class District:
    """A simulated district: its facilities, zones and devices, as the registry holds them."""

    name: str
    seed: int
    facilities: tuple[Facility, ...]
    zones: tuple[Zone, ...]
    devices: tuple[Device, ...]

    def facility(self, facility_id: str) -> Facility:
        """The facility with this id; KeyError when there is none."""
        for facility in self.facilities:
            if facility.id == facility_id:
                return facility
        raise KeyError(facility_id)

    def zone(self, zone_id: str) -> Zone:
        """The zone with this id; KeyError when there is none."""
        for zone in self.zones:
            if zone.zone_id == zone_id:
                return zone
        raise KeyError(zone_id)

    def zones_of(self, facility_id: str) -> tuple[Zone, ...]:
        """The zones of one facility."""
        return tuple(zone for zone in self.zones if zone.facility_id == facility_id)

    def devices_of(self, facility_id: str) -> tuple[Device, ...]:
        """The devices of one facility."""
        return tuple(device for device in self.devices if device.facility_id == facility_id)

    @property
    def districts(self) -> tuple[str, ...]:
        """The administrative districts its facilities stand in, in the order they come."""
        return tuple(dict.fromkeys(facility.district for facility in self.facilities))

    def part(self, district: str) -> District:
        """The facilities of one administrative district, with their zones and devices."""
        facilities = tuple(f for f in self.facilities if f.district == district)
        return dataclasses.replace(self.with_only(facilities), name=district)

    def with_only(self, facilities: tuple[Facility, ...]) -> District:
        """This district cut down to `facilities` (its own), with their zones and devices."""
        ids = {facility.id for facility in facilities}
        return dataclasses.replace(
            self,
            facilities=facilities,
            zones=tuple(zone for zone in self.zones if zone.facility_id in ids),
            devices=tuple(device for device in self.devices if device.facility_id in ids),
        )

    def write_csv(self, directory: str | Path) -> tuple[Path, Path, Path]:
        """Write facilities.csv, zones.csv and devices.csv (UTF-8, SPEC §5 headers) there."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        paths = (folder / "facilities.csv", folder / "zones.csv", folder / "devices.csv")
        _write(paths[0], FACILITY_COLUMNS, self.facilities)
        _write(paths[1], ZONE_COLUMNS, self.zones)
        _write(paths[2], DEVICE_COLUMNS, self.devices)
        return paths


def row(record: Facility | Zone | Device) -> dict[str, str]:
    """One registry record as a CSV row: column -> text, empty for None."""
    return {
        spec.name: _csv_value(getattr(record, spec.name)) for spec in dataclasses.fields(record)
    }


# --- seed data ---------------------------------------------------------------------------------

# district -> (id prefix, administrative code, short name in 备案号, latitude box, longitude box)
_DISTRICTS: Final[dict[str, tuple[str, str, str, tuple[float, float], tuple[float, float]]]] = {
    "鹿城区": ("lc", "330302", "鹿", (27.99, 28.05), (120.62, 120.74)),
    "龙湾区": ("lw", "330303", "龙", (27.93, 27.99), (120.72, 120.85)),
    "瓯海区": ("oh", "330304", "瓯", (27.93, 28.00), (120.55, 120.68)),
    "洞头区": ("dt", "330305", "洞", (27.82, 27.86), (121.12, 121.18)),
}
_DEFAULT_BOX: Final = ((27.99, 28.05), (120.62, 120.74))


def _words(text: str) -> tuple[str, ...]:
    """Space-separated word lists keep the seed data readable at a glance."""
    return tuple(text.split())


_STREETS: Final[dict[str, tuple[str, ...]]] = {
    "鹿城区": _words(
        "五马街道 松台街道 南汇街道 滨江街道 大南街道 南郊街道 七都街道 蒲鞋市街道 广化街道 "
        "双屿街道 丰门街道 仰义街道 藤桥镇 山福镇"
    ),
    "龙湾区": _words("永中街道 蒲州街道 状元街道 海城街道 瑶溪街道 沙城街道 永兴街道"),
    "瓯海区": _words("梧田街道 娄桥街道 新桥街道 景山街道 南白象街道 三垟街道 茶山街道"),
    "洞头区": _words("北岙街道 东屏街道 元觉街道 霓屿街道"),
}
# Where each street's facilities stand: near its 街道办事处 / 镇政府, in WGS 84 (the datum of
# GPS and of 天地图), checked to fall inside the district outlines the regulator's map draws
# (dashboards/outlines.ts) with the scatter below. Streets missing here scatter over their
# district's box instead.
_PLACES: Final[dict[str, tuple[float, float]]] = {
    # 鹿城区
    "五马街道": (28.0190, 120.6530),
    "松台街道": (28.0110, 120.6420),
    "南汇街道": (27.9985, 120.6780),
    "滨江街道": (28.0150, 120.6900),
    "大南街道": (28.0090, 120.6590),
    "南郊街道": (27.9990, 120.6480),
    "七都街道": (28.0230, 120.7160),
    "蒲鞋市街道": (28.0200, 120.6690),
    "广化街道": (28.0160, 120.6270),
    "双屿街道": (28.0090, 120.5960),
    "丰门街道": (28.0080, 120.6150),
    "仰义街道": (28.0420, 120.5700),
    "藤桥镇": (28.0720, 120.5100),
    "山福镇": (28.1000, 120.4550),
    # 瓯海区
    "梧田街道": (27.9640, 120.6770),
    "娄桥街道": (27.9620, 120.6150),
    "新桥街道": (27.9850, 120.6210),
    "景山街道": (27.9990, 120.6330),
    "南白象街道": (27.9470, 120.6880),
    "三垟街道": (27.9780, 120.6620),
    "茶山街道": (27.9320, 120.7030),
}
# How far a facility stands from its street's point, at most (degrees; about 450 m).
_SCATTER: Final = (0.004, 0.0045)

_ROADS: Final = _words(
    "解放路 人民路 信河街 府前街 公园路 胜利路 学院路 飞霞南路 车站大道 锦绣路 南塘街 "
    "黎明西路 汤家桥路 双屿大道 江滨路 望江路 府东路 新城大道"
)
_COMMUNITIES: Final = _words(
    "南浦 广场路 水心 黎明 蝉街 大南门 江滨 锦江 松台 翠微 双井 府前 飞霞 南塘 百里坊 "
    "人民西路 江心 上陡门"
)
# A district's own roads and place names, where the ones above (鹿城区's) would be wrong.
_DISTRICT_ROADS: Final[dict[str, tuple[str, ...]]] = {
    "瓯海区": _words("瓯海大道 温瑞大道 惠民路"),
}
_DISTRICT_COMMUNITIES: Final[dict[str, tuple[str, ...]]] = {
    "瓯海区": _words("梧田 娄桥 新桥 景山 南白象 三垟 茶山 潘桥 郭溪 瞿溪 丽岙 仙岩"),
}
_ELDERLY_BRANDS: Final = _words("康乐 福寿 安康 松鹤 夕阳红 康宁 乐龄 仁爱 颐和 椿萱")
_CHILDCARE_BRANDS: Final = _words(
    "阳光 小星星 蒲公英 童心 禾苗 贝贝乐 小橡树 七彩虹 小海豚 向日葵 启航 爱尚"
)
_CLASS_NICKNAMES: Final = _words("小太阳 小星星 彩虹 海豚 蜜蜂 小熊 苹果 葡萄 橙子 白云 小鹿 竹笋")

# Vendors and models are invented: a vendor's own field, never read by the hub's rules.
_VENDORS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "fall_sensor": (("瓯安科技", "FS-60R"), ("睿眸智能", "RM-FD2"), ("康守物联", "KS-Radar3")),
    "emergency_button": (("一键通", "YJ-SOS3"), ("瓯安科技", "EB-200"), ("康守物联", "KS-Call1")),
    "occupancy_counter": (("客流宝", "PC-300"), ("睿眸智能", "RM-PC8")),
}

# A kind as a facility's name says it.
_KIND_TEXT: Final = {"elderly": "养老", "childcare": "托育", "integrated": "托育养老"}
# Facility kinds in a repeating pattern, so even two facilities are mixed (elderly + childcare).
_KIND_PATTERN: Final = ("elderly", "childcare", "integrated", "elderly", "childcare")
# Class types and how often a childcare facility opens one.
_CLASS_WEIGHTS: Final = (("乳儿班", 1), ("托小班", 3), ("托大班", 3), ("混合班", 2))


def _district_info(
    district: str,
) -> tuple[str, str, str, tuple[float, float], tuple[float, float]]:
    known = _DISTRICTS.get(district)
    if known is not None:
        return known
    # An unknown district still gets a stable, contract-safe id prefix of its own.
    prefix = "d" + hashlib.blake2s(district.encode(), digest_size=2).hexdigest()
    return prefix, "330300", district[:1] or "温", _DEFAULT_BOX[0], _DEFAULT_BOX[1]


class _Builder:
    """Builds one district; holds the rng and the counters that keep names and numbers unique."""

    def __init__(self, district: str, seed: int) -> None:
        self.district = district
        self.rng = random.Random(f"carehub-district:{district}:{seed}")
        self.prefix, self.code, self.short, self.lat_box, self.lon_box = _district_info(district)
        self.streets = _STREETS.get(district, _STREETS["鹿城区"])
        self.roads = _DISTRICT_ROADS.get(district, _ROADS)
        self.communities = _DISTRICT_COMMUNITIES.get(district, _COMMUNITIES)
        self.names: set[str] = set()
        self.filings: dict[tuple[str, int], int] = {}
        self.facilities: list[Facility] = []
        self.zones: list[Zone] = []
        self.devices: list[Device] = []

    # names, addresses, registrations

    def _name(self, kind: str, street: str) -> str:
        rng = self.rng
        for _ in range(50):
            community = rng.choice(self.communities)
            options: tuple[str, ...]
            if kind == "elderly":
                options = (
                    f"{self.district}{street}颐养院",
                    f"{street}居家养老服务中心",
                    f"{rng.choice(_ELDERLY_BRANDS)}养老院",
                    f"{community}社区颐养中心",
                    f"温州{rng.choice(_ELDERLY_BRANDS)}护理院",
                )
            elif kind == "childcare":
                options = (
                    f"{rng.choice(_CHILDCARE_BRANDS)}托育中心",
                    f"{rng.choice(_CHILDCARE_BRANDS)}托育园",
                    f"{community}社区托育点",
                    f"{self.district}{street}普惠托育园",
                )
            else:
                options = (
                    f"{community}社区托育养老一体中心",
                    f"{street}一老一小服务综合体",
                    f"{rng.choice(_ELDERLY_BRANDS)}颐养托育中心",
                )
            name = rng.choice(options)
            if name not in self.names:
                self.names.add(name)
                return name
        # Fifty clashes in a row only happens for very large districts: number the branch.
        name = f"{rng.choice(_CHILDCARE_BRANDS)}{_KIND_TEXT[kind]}服务点{len(self.names) + 1}"
        self.names.add(name)
        return name

    def _filing(self, office: str, year: int) -> str:
        # Numbering starts where the bureau's earlier filings of that year left off.
        number = self.filings.get((office, year), self.rng.randint(3, 40)) + 1
        self.filings[(office, year)] = number
        return f"{self.short}{office}〔{year}〕{number}号"

    def _registration(self, kind: str) -> str:
        year = self.rng.randint(2019, 2025)
        # Elderly care files with 民政 (养备), childcare with 卫健 (托备); integrated with both.
        if kind == "elderly":
            return self._filing("民养备", year)
        if kind == "childcare":
            return self._filing("卫托备", year)
        return f"{self._filing('民养备', year)}；{self._filing('卫托备', year)}"

    def _position(self, street: str) -> tuple[float, float]:
        """A facility's coordinates: near its street's real place, or in the district's box."""
        place = _PLACES.get(street)
        if place is None:
            return (
                round(self.rng.uniform(*self.lat_box), 6),
                round(self.rng.uniform(*self.lon_box), 6),
            )
        return (
            round(place[0] + self.rng.uniform(-_SCATTER[0], _SCATTER[0]), 6),
            round(place[1] + self.rng.uniform(-_SCATTER[1], _SCATTER[1]), 6),
        )

    # zones and devices

    def _device(self, facility_id: str, kind: str, short: str, zone_id: str | None) -> None:
        number = (
            sum(
                1
                for device in self.devices
                if device.facility_id == facility_id and device.type == kind
            )
            + 1
        )
        vendor, model = self.rng.choice(_VENDORS[kind])
        self.devices.append(
            Device(
                id=f"{facility_id}-{short}-{number:02d}",
                facility_id=facility_id,
                type=kind,
                zone_id=zone_id,
                heartbeat_s=CATALOGUE[kind].heartbeat_s,
                vendor=vendor,
                model=model,
            )
        )

    def _zone(
        self,
        facility_id: str,
        local_id: str,
        name: str,
        kind: str,
        *,
        capacity: int,
        class_type: str | None = None,
    ) -> str:
        zone_id = f"{facility_id}-{local_id}"
        self.zones.append(Zone(facility_id, zone_id, name, kind, capacity, class_type))
        return zone_id

    def _rooms(self, facility_id: str, count: int) -> int:
        """Monitored rooms, each with a fall sensor and a call button; returns their beds."""
        beds = 0
        for index in range(count):
            floor, number = divmod(index, 6)
            label = f"{floor + 1}{number + 1:02d}"
            room_beds = self.rng.choice((1, 2, 2, 2, 3))
            beds += room_beds
            zone_id = self._zone(facility_id, f"r{label}", f"{label}室", "room", capacity=room_beds)
            self._device(facility_id, "fall_sensor", "fs", zone_id)
            self._device(facility_id, "emergency_button", "eb", zone_id)
        return beds

    def _classes(self, facility_id: str, count: int) -> int:
        """Childcare classes, each with a counter and a call button; returns their places."""
        places = 0
        types = [name for name, _ in _CLASS_WEIGHTS]
        weights = [weight for _, weight in _CLASS_WEIGHTS]
        nicknames = self.rng.sample(_CLASS_NICKNAMES, count)
        for index in range(count):
            class_type = self.rng.choices(types, weights)[0]
            limit = CLASS_LIMITS[class_type][0]
            # Most classes are licensed at the national maximum, some a little below it.
            capacity = limit if self.rng.random() < 0.7 else limit - self.rng.randint(1, 3)
            places += capacity
            zone_id = self._zone(
                facility_id,
                f"c{index + 1}",
                f"{nicknames[index]}班",
                "class",
                capacity=capacity,
                class_type=class_type,
            )
            self._device(facility_id, "occupancy_counter", "oc", zone_id)
            self._device(facility_id, "emergency_button", "eb", zone_id)
        return places

    def _common(self, facility_id: str, local_id: str, name: str, capacity: int) -> None:
        zone_id = self._zone(facility_id, local_id, name, "common", capacity=capacity)
        self._device(facility_id, "occupancy_counter", "oc", zone_id)

    def facility(self, index: int) -> None:
        """Add facility number `index` (0-based) with its zones and devices."""
        rng = self.rng
        kind = _KIND_PATTERN[index % len(_KIND_PATTERN)]
        facility_id = f"{self.prefix}-{index + 1:03d}"
        street = rng.choice(self.streets)
        name = self._name(kind, street)
        address = f"浙江省温州市{self.district}{rng.choice(self.roads)}{rng.randint(1, 399)}号"
        beds: int | None = None
        places: int | None = None
        if kind == "elderly":
            monitored = self._rooms(facility_id, rng.randint(6, 10))
            # Sensors cover a pilot set of rooms; the licence counts every bed in the home.
            beds = max(monitored, rng.randrange(40, 161, 10))
            self._common(facility_id, "dining", "餐厅", max(20, round(beds * 0.5 / 5) * 5))
            self._common(facility_id, "activity", "活动室", rng.randrange(20, 41, 5))
            if rng.random() < 0.6:
                self._common(facility_id, "rehab", "康复室", rng.randrange(10, 21, 2))
            self._device(facility_id, "emergency_button", "eb", f"{facility_id}-dining")
        elif kind == "childcare":
            places = self._classes(facility_id, rng.randint(3, 5))
            self._common(facility_id, "hall", "多功能厅", rng.randrange(30, 61, 5))
        else:
            monitored = self._rooms(facility_id, rng.randint(4, 6))
            beds = max(monitored, rng.randrange(20, 61, 5))
            places = self._classes(facility_id, rng.randint(2, 3))
            self._common(facility_id, "dining", "长者餐厅", max(20, round(beds * 0.6 / 5) * 5))
            self._common(facility_id, "intergen", "代际活动室", rng.randrange(24, 41, 4))
        latitude, longitude = self._position(street)
        self.facilities.append(
            Facility(
                id=facility_id,
                name=name,
                kind=kind,
                district=self.district,
                address=address,
                latitude=latitude,
                longitude=longitude,
                registration_no=self._registration(kind),
                beds=beds,
                childcare_places=places,
            )
        )


def build_district(n: int, seed: int = 7, district: str = "鹿城区") -> District:
    """A deterministic district of `n` mixed facilities with their zones and devices."""
    if n < 0:
        raise ValueError("n must be ≥ 0")
    if n > 999:
        # Facility ids are `{prefix}-NNN`; a district of more than 999 homes is a city.
        raise ValueError("n must be ≤ 999")
    builder = _Builder(district, seed)
    for index in range(n):
        builder.facility(index)
    return District(
        name=district,
        seed=seed,
        facilities=tuple(builder.facilities),
        zones=tuple(builder.zones),
        devices=tuple(builder.devices),
    )


# The demo's district: 温州's 鹿城区 and, beside it, 瓯海区 (the home of 育养宝), each with a
# regulator of its own. 鹿城区 has the larger share, as it has the older, denser city centre.
DEMO_DISTRICTS: Final = ("鹿城区", "瓯海区")
DEMO_SECOND_SHARE: Final = 0.4


def demo_counts(n: int) -> dict[str, int]:
    """How the demo's `n` facilities split over its districts: 12 + 8 for 20, 1 + 1 for 2."""
    if n < 0:
        raise ValueError("n must be ≥ 0")
    second = 0 if n < 2 else max(1, round(n * DEMO_SECOND_SHARE))
    return {DEMO_DISTRICTS[0]: n - second, DEMO_DISTRICTS[1]: second}


def build_districts(counts: Mapping[str, int], seed: int = 7) -> District:
    """Several districts' facilities as one registry, each district built as build_district
    builds it alone (ids, names and places do not depend on the others)."""
    parts = [build_district(n, seed, name) for name, n in counts.items() if n > 0]
    return District(
        name="、".join(part.name for part in parts),
        seed=seed,
        facilities=tuple(f for part in parts for f in part.facilities),
        zones=tuple(zone for part in parts for zone in part.zones),
        devices=tuple(device for part in parts for device in part.devices),
    )


def build_demo_district(n: int, seed: int = 7) -> District:
    """The demo's `n` facilities over 鹿城区 and 瓯海区 (demo_counts)."""
    if n > 999:
        raise ValueError("n must be ≤ 999")
    return build_districts(demo_counts(n), seed)


def district_prefix(district: str) -> str:
    """The short id prefix of a district's facilities (`lc` for 鹿城区, `oh` for 瓯海区)."""
    return _district_info(district)[0]
