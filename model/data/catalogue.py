"""The named anatomical region catalogue (``model/data/regions.yaml``) and its loader.

Each entry names one region of one modality with a canonical normalised box (``0..1``, origin
top-left, patient's right on the image's left) and synonyms. The same name may appear under
several modalities (``left lung`` in CT and X-ray); ``(modality, name)`` is unique. The generator
draws regions at their canonical box plus jitter; curation and evaluation resolve free-text
region names through :meth:`RegionCatalogue.resolve`.

Example:
    >>> cat = load_region_catalogue()
    >>> cat.get("macula").box
    (0.28, 0.38, 0.46, 0.56)
    >>> [r.name for r in cat.for_modality("xray")][:2]
    ['right lung', 'left lung']
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from model.data.schema import MODALITIES

__all__ = ["DEFAULT_CATALOGUE", "CatalogueError", "RegionCatalogue", "RegionEntry", "load_region_catalogue"]

#: The catalogue shipped with the package.
DEFAULT_CATALOGUE = Path(__file__).with_name("regions.yaml")


class CatalogueError(ValueError):
    """The region catalogue is malformed; the message names the file, the entry and the field."""


@dataclass(frozen=True)
class RegionEntry:
    """One catalogue region: name, modality, canonical normalised box and synonyms."""

    name: str
    modality: str
    box: tuple[float, float, float, float]
    synonyms: tuple[str, ...] = ()


class RegionCatalogue:
    """Read-only view over the catalogue entries, in file order.

    Attributes:
        version: the catalogue's ``version`` field.
        entries: every entry, in file order.
    """

    def __init__(self, entries: list[RegionEntry], *, version: int) -> None:
        self.version = version
        self.entries: tuple[RegionEntry, ...] = tuple(entries)
        self._by_key = {(e.modality, e.name): e for e in self.entries}
        self._aliases: dict[str, str] = {}
        for e in self.entries:
            for alias in (e.name, *e.synonyms):
                self._aliases.setdefault(alias.lower(), e.name)

    @property
    def names(self) -> list[str]:
        """Distinct region names, in file order."""
        return list(dict.fromkeys(e.name for e in self.entries))

    @property
    def modalities(self) -> list[str]:
        """Modalities that have at least one region, in file order."""
        return list(dict.fromkeys(e.modality for e in self.entries))

    def for_modality(self, modality: str) -> list[RegionEntry]:
        """The regions of one modality, in file order (empty list if it has none)."""
        return [e for e in self.entries if e.modality == modality]

    def get(self, name: str, modality: str | None = None) -> RegionEntry:
        """The entry called ``name`` (of ``modality`` when the name exists in several).

        Raises:
            KeyError: unknown name, or a name shared by several modalities without ``modality``.
        """
        if modality is not None:
            if (modality, name) not in self._by_key:
                raise KeyError(f"no region {name!r} for modality {modality!r} in the catalogue")
            return self._by_key[(modality, name)]
        found = [e for e in self.entries if e.name == name]
        if not found:
            raise KeyError(f"no region {name!r} in the catalogue; known: {self.names}")
        if len(found) > 1:
            mods = [e.modality for e in found]
            raise KeyError(f"region {name!r} exists for modalities {mods}; pass modality=")
        return found[0]

    def resolve(self, text: str) -> str | None:
        """The canonical region name for a name or synonym (case-insensitive), else None."""
        return self._aliases.get(text.strip().lower())

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[RegionEntry]:
        return iter(self.entries)


def _parse_entry(raw: Any, i: int, where: str) -> RegionEntry:
    """Validate one raw YAML entry; errors name the entry index, its name and the field."""
    label = f"{where}: regions[{i}]"
    if not isinstance(raw, dict):
        raise CatalogueError(f"{label} must be a mapping, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise CatalogueError(f"{label}: field 'name' must be a non-empty string, got {name!r}")
    label = f"{where}: regions[{i}] ({name!r})"
    modality = raw.get("modality")
    if modality not in MODALITIES:
        raise CatalogueError(f"{label}: field 'modality' is {modality!r}; allowed: {list(MODALITIES)}")
    box = raw.get("box")
    if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
        raise CatalogueError(
            f"{label}: field 'box' must be a list of 4 numbers [x1, y1, x2, y2], got {box!r}"
        )
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise CatalogueError(
            f"{label}: field 'box' {box} must satisfy 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1"
        )
    synonyms = raw.get("synonyms", [])
    if not (isinstance(synonyms, list) and all(isinstance(s, str) and s.strip() for s in synonyms)):
        raise CatalogueError(
            f"{label}: field 'synonyms' must be a list of non-empty strings, got {synonyms!r}"
        )
    unknown = set(raw) - {"name", "modality", "box", "synonyms"}
    if unknown:
        raise CatalogueError(f"{label}: unknown field(s) {sorted(unknown)}")
    return RegionEntry(name=name, modality=modality, box=(x1, y1, x2, y2), synonyms=tuple(synonyms))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_region_catalogue(path: str | os.PathLike | None = None) -> RegionCatalogue:
    """Load and validate a region catalogue YAML file.

    Args:
        path: the YAML file; ``None`` loads the packaged ``model/data/regions.yaml``.

    Returns:
        The validated catalogue.

    Raises:
        CatalogueError: the file is not a mapping with ``version`` and ``regions``, an entry is
            malformed (the message names the entry and the field), or ``(modality, name)``
            repeats.
    """
    where = str(path or DEFAULT_CATALOGUE)
    with open(where, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    if not isinstance(doc, dict):
        raise CatalogueError(f"{where}: expected a mapping with 'version' and 'regions'")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CatalogueError(f"{where}: field 'version' must be an integer, got {version!r}")
    raw_entries = doc.get("regions")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise CatalogueError(f"{where}: field 'regions' must be a non-empty list")
    entries, seen = [], set()
    for i, raw in enumerate(raw_entries):
        e = _parse_entry(raw, i, where)
        if (e.modality, e.name) in seen:
            raise CatalogueError(
                f"{where}: regions[{i}] ({e.name!r}): duplicate of an earlier {e.modality} region"
            )
        seen.add((e.modality, e.name))
        entries.append(e)
    return RegionCatalogue(entries, version=version)
