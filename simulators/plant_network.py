"""The simulated clinker and cement network: which plants exist, where, and which road legs link them.

One place for the network's identity, shared by the simulators that must agree on it: the ERP (plants,
routes, demand, inventory) and the fleet (trucks driving the road legs between these coordinates). The
ERP simulator adds capacities, costs and stock bounds per plant; nothing here is random.

Kinds follow shared/DOMAIN.md: integrated units (``IU``) make clinker, grinding units (``GU``) grind it into
cement and meet demand, hubs (``HUB``) hold and forward stock. The plants sit in western India (the plant
network is costed in INR), on real city coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PLANTS", "ROAD_LEGS", "Plant", "RoadLeg", "haversine_km", "plant", "road_km"]


@dataclass(frozen=True)
class Plant:
    plant_id: str
    kind: str  # IU, GU or HUB
    name: str
    city: str
    latitude: float  # WGS 84 degrees
    longitude: float


PLANTS: tuple[Plant, ...] = (
    Plant("IU01", "IU", "Chittorgarh integrated unit", "Chittorgarh", 24.8887, 74.6269),
    Plant("IU02", "IU", "Kota integrated unit", "Kota", 25.2138, 75.8648),
    Plant("IU03", "IU", "Rajkot integrated unit", "Rajkot", 22.3039, 70.8022),
    Plant("GU01", "GU", "Ahmedabad grinding unit", "Ahmedabad", 23.0225, 72.5714),
    Plant("GU02", "GU", "Jaipur grinding unit", "Jaipur", 26.9124, 75.7873),
    Plant("GU03", "GU", "Indore grinding unit", "Indore", 22.7196, 75.8577),
    Plant("GU04", "GU", "Surat grinding unit", "Surat", 21.1702, 72.8311),
    Plant("GU05", "GU", "Udaipur grinding unit", "Udaipur", 24.5854, 73.7125),
    Plant("HUB01", "HUB", "Vadodara hub", "Vadodara", 22.3072, 73.1812),
    Plant("HUB02", "HUB", "Ajmer hub", "Ajmer", 26.4499, 74.6399),
)

# Roads wind: a road leg is this much longer than the great circle between its ends (a common
# circuity factor for Indian highways).
ROAD_CIRCUITY = 1.3


@dataclass(frozen=True)
class RoadLeg:
    origin: str
    destination: str
    distance_km: float


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two WGS 84 points."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(a))


def plant(plant_id: str) -> Plant:
    """The plant with this id (KeyError naming the known ids otherwise)."""
    for p in PLANTS:
        if p.plant_id == plant_id:
            return p
    raise KeyError(f"no plant {plant_id!r} in the network; known: {', '.join(p.plant_id for p in PLANTS)}")


def road_km(origin: str, destination: str) -> float:
    """Road distance in km between two plants (great circle × circuity, one decimal)."""
    a, b = plant(origin), plant(destination)
    return round(haversine_km(a.latitude, a.longitude, b.latitude, b.longitude) * ROAD_CIRCUITY, 1)


def _road_legs() -> tuple[RoadLeg, ...]:
    # Every integrated unit ships clinker by road to every grinding unit and hub within 600 km, and to
    # the other integrated units (balancing clinker between kilns).
    legs = []
    sources = [p for p in PLANTS if p.kind == "IU"]
    for origin in sources:
        for destination in PLANTS:
            if destination.plant_id == origin.plant_id:
                continue
            km = road_km(origin.plant_id, destination.plant_id)
            if destination.kind == "IU" or km <= 600:
                legs.append(RoadLeg(origin.plant_id, destination.plant_id, km))
    return tuple(legs)


ROAD_LEGS: tuple[RoadLeg, ...] = _road_legs()
