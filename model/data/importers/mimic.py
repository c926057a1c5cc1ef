"""Importer for MIMIC-CXR-style report trees, and the report section parser.

Layout (MIMIC-CXR reports merged with MIMIC-CXR-JPG)::

    <root>/files/p10/p10000032/s50414267.txt        free-text report of study s50414267
    <root>/files/p10/p10000032/s50414267/<dicom_id>.jpg   its images (.jpg or .png)

Every image of a study becomes one record carrying the study's FINDINGS and IMPRESSION sections
(``report_findings``/``report_impression``; CONCLUSION stands in for a missing IMPRESSION);
COMPARISON, INDICATION, HISTORY, TECHNIQUE etc. are parsed but not kept. The patient id is the
``pNNNNNNNN`` folder name. Study ids do not encode time and the importer reads no metadata CSV, so
``visit_index`` is 0 for every study. A report without a study folder of images is skipped (logged).

Streaming: the tree is walked one folder at a time in sorted order; one report is in memory.

Reference: Johnson et al., "MIMIC-CXR, a de-identified publicly available database of chest
radiographs with free-text reports", Scientific Data 6, 317 (2019); section names follow
https://github.com/MIT-LCP/mimic-cxr/blob/master/txt/section_parser.py
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from model.data.importers._common import ImportFormatError, image_size, manifest_record, relative_path

__all__ = ["KNOWN_SECTIONS", "iter_mimic_cxr", "parse_report_sections"]

log = logging.getLogger(__name__)

#: Section headers recognised in any case. Other headers count only when written in capitals.
KNOWN_SECTIONS: frozenset[str] = frozenset(
    {
        "findings",
        "impression",
        "conclusion",
        "conclusions",
        "comparison",
        "comparisons",
        "indication",
        "indications",
        "history",
        "clinical history",
        "technique",
        "examination",
        "exam",
        "reason for exam",
        "reason for examination",
        "recommendation",
        "recommendations",
        "notification",
        "wet read",
        "procedure",
        "clinical information",
        "findings and impression",
    }
)
_HEADER = re.compile(r"^[ \t]*(?P<name>[A-Za-z][A-Za-z ()/&,-]{0,48}?)[ \t]*:", re.MULTILINE)
_GROUP = re.compile(r"^p\d{2}$")
_PATIENT = re.compile(r"^p\d+$")
_STUDY = re.compile(r"^s\d+$")


def _normalise(name: str) -> str:
    return " ".join(name.lower().split())


def _is_header(name: str) -> bool:
    return _normalise(name) in KNOWN_SECTIONS or (name.strip().isupper() and len(name.strip()) > 1)


def parse_report_sections(text: str) -> dict[str, str]:
    """Split a free-text radiology report into its sections.

    A header is a line start followed by a name and a colon (``FINDINGS:``, ``Impression :``).
    Names in :data:`KNOWN_SECTIONS` count in any case; any other all-capitals name also counts (as
    in MIT-LCP's MIMIC-CXR section parser), so ``Note: ...`` inside a paragraph does not start a
    section. Keys are lower case with single spaces; text is whitespace-collapsed; a repeated
    section is concatenated; text before the first header is under ``preamble``; empty sections
    are dropped.

    Example:
        >>> parse_report_sections("FINAL REPORT\\n FINDINGS: \\n No effusion.\\n\\n impression:  Normal.")
        {'preamble': 'FINAL REPORT', 'findings': 'No effusion.', 'impression': 'Normal.'}

    Args:
        text: the report.

    Returns:
        Section name -> section text, in order of first appearance.
    """
    heads = [m for m in _HEADER.finditer(text) if _is_header(m.group("name"))]
    pieces = [("preamble", 0, heads[0].start() if heads else len(text))]
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        pieces.append((_normalise(m.group("name")), m.end(), end))
    out: dict[str, str] = {}
    for name, start, end in pieces:
        body = " ".join(text[start:end].split())
        if body:
            out[name] = f"{out[name]} {body}" if name in out else body
    return out


def _sorted_dirs(folder: Path, pattern: re.Pattern[str]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and pattern.match(p.name))


def _study_records(
    report: Path, *, data_root: Path, image_exts: Sequence[str], site: str, site_role: str
) -> Iterator[dict[str, Any]]:
    """Records of the images of one study, all carrying its report sections."""
    study_dir = report.with_suffix("")
    images = (
        sorted(p for p in study_dir.glob("*") if p.suffix.lower() in image_exts) if study_dir.is_dir() else []
    )
    if not images:
        log.warning("%s: no images in %s; study skipped", report, study_dir)
        return
    try:
        sections = parse_report_sections(report.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ImportFormatError(f"{report}: report is not UTF-8 text: {e}") from e
    for image in images:
        width, height = image_size(image, f"{report}: image {image.name}")
        yield manifest_record(
            image_id=f"{report.stem}_{image.stem}",
            source="mimic_cxr",
            patient_id=report.parent.name,
            site=site,
            site_role=site_role,
            modality="xray",
            body_part="chest",
            image_path=relative_path(image, data_root),
            width=width,
            height=height,
            report_findings=sections.get("findings") or sections.get("findings and impression"),
            report_impression=sections.get("impression") or sections.get("conclusion"),
        )


def iter_mimic_cxr(
    root: str | os.PathLike,
    *,
    data_root: str | os.PathLike,
    image_exts: Sequence[str] = (".jpg", ".jpeg", ".png"),
    site: str = "mimic_cxr",
    site_role: str = "internal",
) -> Iterator[dict[str, Any]]:
    """Stream one manifest record per image of a MIMIC-CXR-style ``files/`` tree.

    Args:
        root: the folder holding ``files/``; inside ``data_root``.
        data_root: the profile's data root; stored image paths are relative to it.
        image_exts: image file suffixes (lower case) looked for in each study folder.
        site: site name stored in the records.
        site_role: ``internal`` or ``external``.

    Yields:
        Manifest records, ordered by patient group, patient, study and image file name.

    Raises:
        ImportFormatError: ``files/`` is missing, a report is not UTF-8 or an image is unreadable.
    """
    files = Path(root) / "files"
    if not files.is_dir():
        raise ImportFormatError(f"{files}: MIMIC-CXR 'files' folder not found")
    exts = tuple(e.lower() for e in image_exts)
    for group in _sorted_dirs(files, _GROUP):
        for patient in _sorted_dirs(group, _PATIENT):
            for report in sorted(p for p in patient.glob("s*.txt") if _STUDY.match(p.stem)):
                yield from _study_records(
                    report, data_root=Path(data_root), image_exts=exts, site=site, site_role=site_role
                )
