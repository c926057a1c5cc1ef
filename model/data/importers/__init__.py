"""Importers: public medical datasets (and the generator's raw layout) -> manifest records.

Each importer is a generator of *manifest records*: dicts with every
:class:`~model.data.schema.ImageRecord` field except ``split`` and ``image_sha256``, which
:func:`model.data.ingest.ingest` assigns (split by patient) and computes (hash of the stored image).
Paths in records are relative to the profile's data root. Importers that create images (MedMNIST
arrays, DICOM slices) write PNGs under ``png_dir`` and record them under ``png_rel``, the same
folder named relative to the data root.

Malformed input raises :class:`ImportFormatError` (a ``ValueError``) naming the file and the record
(line, entry or array index) and the field.

Kinds accepted in ingest ``sources`` and their importers (real public layouts):

* ``medmnist``: :func:`iter_medmnist`, ``<flavour>.npz`` with train/val/test arrays.
* ``slake``: :func:`iter_slake`, ``train.json``/``validate.json``/``test.json`` + ``imgs/``.
* ``vqarad``: :func:`iter_vqarad`, ``VQA_RAD Dataset Public.json`` + ``VQA_RAD Image Folder/``.
* ``mimic``: :func:`iter_mimic_cxr`, ``files/pXX/pNNNNNNNN/sNNNNNNNN.txt`` + study image folder.
* ``vindr``: :func:`iter_vindr`, VinDr box CSV + ``<image_id>.png``.
* ``dicom_series``: :func:`iter_dicom_series`, folders of ``.dcm`` slices.
* ``xmed_raw``: :func:`iter_xmed_raw` / :func:`iter_xmed_patients`, the generator's ``raw/``.
"""

from model.data.importers._common import ImportFormatError, manifest_record, relative_path
from model.data.importers.dicom_series import DICOM_MODALITIES, iter_dicom_series, rescaled_spacing
from model.data.importers.medmnist import MEDMNIST_FLAVOURS, iter_medmnist
from model.data.importers.mimic import KNOWN_SECTIONS, iter_mimic_cxr, parse_report_sections
from model.data.importers.slake import SLAKE_MODALITIES, iter_slake
from model.data.importers.vindr import NO_FINDING, iter_vindr
from model.data.importers.vqarad import iter_vqarad
from model.data.importers.xmed_raw import iter_jsonl, iter_xmed_patients, iter_xmed_raw

__all__ = [
    "DICOM_MODALITIES",
    "KNOWN_SECTIONS",
    "MEDMNIST_FLAVOURS",
    "NO_FINDING",
    "SLAKE_MODALITIES",
    "ImportFormatError",
    "iter_dicom_series",
    "iter_jsonl",
    "iter_medmnist",
    "iter_mimic_cxr",
    "iter_slake",
    "iter_vindr",
    "iter_vqarad",
    "iter_xmed_patients",
    "iter_xmed_raw",
    "manifest_record",
    "parse_report_sections",
    "relative_path",
    "rescaled_spacing",
]
