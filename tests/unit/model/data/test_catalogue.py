"""Tests of the region catalogue (model/data/regions.yaml) and its loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from model.data.catalogue import CatalogueError, load_region_catalogue
from model.data.render import LESION_STYLE
from model.data.synth import MODALITY_SPECS

RENDERED = ("ct", "mri", "xray", "fundus", "pathology", "dermoscopy", "ultrasound", "endoscopy")


def test_packaged_catalogue_covers_every_rendered_modality():
    cat = load_region_catalogue()
    assert cat.version == 1
    assert len(cat) >= 30
    assert set(cat.modalities) == set(RENDERED)
    for e in cat:
        x1, y1, x2, y2 = e.box
        assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1, e
        assert e.synonyms, f"{e.modality}/{e.name} has no synonyms"


def test_lookup_by_name_modality_and_synonym():
    cat = load_region_catalogue()
    assert [e.name for e in cat.for_modality("ct")][:2] == ["right lung", "left lung"]
    assert cat.get("macula").modality == "fundus"
    assert cat.get("left lung", "xray").box != cat.get("left lung", "ct").box
    with pytest.raises(KeyError, match="pass modality"):
        cat.get("left lung")  # shared by CT and X-ray
    with pytest.raises(KeyError, match="no region 'spleen'"):
        cat.get("spleen")
    assert cat.resolve("Optic Nerve Head") == "optic disc"
    assert cat.resolve("nowhere") is None
    assert "lateral ventricles" in cat.names and len(cat.names) == len(set(cat.names))
    assert cat.for_modality("other") == []


def test_every_lesion_region_of_the_generator_is_in_the_catalogue():
    cat = load_region_catalogue()
    for modality, spec in MODALITY_SPECS.items():
        assert set(spec.lesions) == set(LESION_STYLE[modality]), modality
        for regions in spec.lesions.values():
            for r in regions:
                cat.get(r, modality)


def _write(tmp_path: Path, regions, version=1) -> Path:
    p = tmp_path / "regions.yaml"
    p.write_text(yaml.safe_dump({"version": version, "regions": regions}))
    return p


GOOD = {"name": "heart", "modality": "ct", "box": [0.4, 0.4, 0.6, 0.6], "synonyms": ["cardiac silhouette"]}


@pytest.mark.parametrize(
    "bad, field",
    [
        ({**GOOD, "name": "liver", "box": [0.6, 0.4, 0.5, 0.6]}, "box"),  # x1 > x2
        ({**GOOD, "name": "liver", "box": [0.1, 0.2, 0.3]}, "box"),
        ({**GOOD, "name": "liver", "box": [0.1, 0.2, 0.3, 1.5]}, "box"),
        ({**GOOD, "name": "liver", "modality": "sonar"}, "modality"),
        ({**GOOD, "name": "liver", "synonyms": "hepar"}, "synonyms"),
        ({**GOOD, "name": "liver", "colour": "red"}, "unknown field"),
    ],
)
def test_malformed_entry_error_names_file_entry_and_field(tmp_path, bad, field):
    path = _write(tmp_path, [GOOD, bad])
    with pytest.raises(CatalogueError) as err:
        load_region_catalogue(path)
    msg = str(err.value)
    assert str(path) in msg and "regions[1]" in msg and "'liver'" in msg and field in msg


def test_missing_name_duplicate_and_version_errors(tmp_path):
    with pytest.raises(CatalogueError, match=r"regions\[0\]: field 'name'"):
        load_region_catalogue(_write(tmp_path, [{**GOOD, "name": ""}]))
    with pytest.raises(CatalogueError, match=r"regions\[1\] \('heart'\): duplicate"):
        load_region_catalogue(_write(tmp_path, [GOOD, GOOD]))
    with pytest.raises(CatalogueError, match="'version'"):
        load_region_catalogue(_write(tmp_path, [GOOD], version="one"))
    with pytest.raises(CatalogueError, match="'regions'"):
        load_region_catalogue(_write(tmp_path, []))
