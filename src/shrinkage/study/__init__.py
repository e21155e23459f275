"""The study application: ``shrinkage study`` and its store, report and CLI.

This subpackage is built on the library (:mod:`shrinkage`) through its public API
only. It needs the ``study`` extra (``pip install 'shrinkage[study]'``: pandas,
matplotlib, Jinja2, click) for tables, plots, the HTML report and the command line;
``import shrinkage`` never imports it.

=====================================  ==============================================
:mod:`shrinkage.study.config`          :class:`StudyConfig`, the options of a study
:mod:`shrinkage.study.runner`          :func:`run_study`: data, CV per penalty, store
:mod:`shrinkage.study.datasets`        bundled and synthetic data sets
:mod:`shrinkage.study.tabular`         CSV/Parquet reading, one-hot encoding
:mod:`shrinkage.study.predictor`       a model file's preprocessing; predictions from raw rows
:mod:`shrinkage.study.onnx`            a model file as ONNX, preprocessing included
:mod:`shrinkage.study.store`           the SQLite store of studies, runs and points
:mod:`shrinkage.study.report`          the HTML report built from a store
:mod:`shrinkage.study.geometry`        the L1-diamond / L2-circle figure
:mod:`shrinkage.study.cli`             the ``shrinkage`` command line
=====================================  ==============================================
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import StudyConfig

if TYPE_CHECKING:
    from .datasets import BUNDLED, Dataset, load_dataset, make_synthetic
    from .runner import prepare_study, run_study
    from .store import Store, StoreError

# imported when first used: the command line can speak before scikit-learn and the
# runner are loaded (a second of its start)
_LAZY = {
    "BUNDLED": "datasets",
    "Dataset": "datasets",
    "load_dataset": "datasets",
    "make_synthetic": "datasets",
    "prepare_study": "runner",
    "run_study": "runner",
    "Store": "store",
    "StoreError": "store",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BUNDLED",
    "Dataset",
    "Store",
    "StoreError",
    "StudyConfig",
    "load_dataset",
    "make_synthetic",
    "prepare_study",
    "run_study",
]
