"""flexrec.data: loaders, the normalised dataset, the KuaiRec simulator, tasks, the feedback models'
training data (:mod:`flexrec.data.feedback`) and the DataModule.

The data module lives in :mod:`flexrec.data.datamodule` (imported on demand: it pulls in Lightning).
"""

from __future__ import annotations

from flexrec.data.dataset import InteractionData, LabelScale
from flexrec.data.generic import load_interactions
from flexrec.data.kuairec import load_kuairec
from flexrec.data.loaders import DATASETS, load_dataset
from flexrec.data.movielens import load_movielens_1m, load_movielens_100k, load_movielens_latest

__all__ = [
    "DATASETS",
    "InteractionData",
    "LabelScale",
    "load_dataset",
    "load_interactions",
    "load_kuairec",
    "load_movielens_1m",
    "load_movielens_100k",
    "load_movielens_latest",
]
