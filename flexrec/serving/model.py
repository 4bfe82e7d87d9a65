"""A served model: a policy, the needs it knows and the item catalogue it ranks from.

:func:`load_served_model` reads any of

- a training checkpoint (``.ckpt``): the policy is rebuilt as the run built it
  (:class:`~flexrec.module.FlexRecModule`), and the run's data module is rebuilt from the settings
  the checkpoint saved, so the dataset must be where training read it (``FLEXREC_DATA_DIR``);
- a native export (one file written by ``flexrec export``, :data:`NATIVE_FORMAT`): weights, policy
  settings, needs and catalogue in a ``torch.save`` file of plain containers and tensors, read with
  ``torch.load(weights_only=True)`` (no pickled code), needing no dataset;
- an LLM export folder (:data:`LLM_FORMAT`): a standard PEFT adapter (or full model) folder with
  its tokenizer, ``flexrec_export.json`` (prompt format, needs) and ``catalogue.pt``.

The :class:`Catalogue` holds what a request's item ids are turned into: the item's index in the
model's item table, its title, categories and statistics. Statistics are those at the end of the
dataset (every interaction counted; the trend window ends after the last interaction): the state a
model trained on the log would be served in. Candidate features and the LLM's item lines are
computed from them exactly as the task builder computes them before a task's cut
(:func:`flexrec.data.features.candidate_features`, :meth:`flexrec.needs.base.Need.item_text`).
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from flexrec.checkpoints import data_info_conflicts, read_checkpoint
from flexrec.errors import ConfigError
from flexrec.needs.base import ItemStats, Need
from flexrec.policies.base import Policy
from flexrec.registry import registries
from flexrec.types import DataInfo

__all__ = [
    "EXPORT_VERSION",
    "LLM_FORMAT",
    "LLM_MANIFEST",
    "NATIVE_FORMAT",
    "Catalogue",
    "ServedModel",
    "load_checkpoint",
    "load_llm_export",
    "load_served_model",
    "plain",
]

NATIVE_FORMAT = "flexrec-native-export"
"""The ``format`` of a native export file."""
LLM_FORMAT = "flexrec-llm-export"
"""The ``format`` of an LLM export folder's manifest."""
LLM_MANIFEST = "flexrec_export.json"
"""The manifest of an LLM export folder (prompt format, needs, policy settings)."""
CATALOGUE_FILE = "catalogue.pt"
"""The item catalogue of an LLM export folder (``torch.load(weights_only=True)``)."""
EXPORT_VERSION = 1


def plain(value: Any) -> Any:
    """``value`` with tuples as lists and mappings as dicts (JSON- and ``weights_only``-safe)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


@dataclass(eq=False)
class Catalogue:
    """The items a served model knows, with what its inputs are computed from.

    Attributes:
        dataset: the dataset's name.
        item_ids: ``[I]`` the dataset's own item ids (e.g. MovieLens ``movieId``), by item index.
        titles: ``[I]`` titles without the year.
        years: ``[I]`` release years (``-1`` unknown).
        categories: the ``C`` category names.
        item_categories: ``[I, C]`` bool multi-hot categories.
        count: ``[I]`` interactions in the whole dataset.
        mean_label: ``[I]`` mean label (NaN where none).
        recent: per need name, ``[I]`` interactions in the need's trend window before ``as_of``.
        num_users: the dataset's user count (popularity features are scaled by it).
        scale: the dataset's label scale (:class:`~flexrec.data.dataset.LabelScale` fields).
        trend_window: the dataset's default trend window in seconds.
        as_of: the statistics count interactions strictly before this time (seconds since the
            epoch): one second after the last interaction.
    """

    dataset: str
    item_ids: list[Any]
    titles: list[str]
    years: list[int]
    categories: list[str]
    item_categories: np.ndarray
    count: np.ndarray
    mean_label: np.ndarray
    recent: dict[str, np.ndarray]
    num_users: int
    scale: dict[str, Any]
    trend_window: int
    as_of: int
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {str(item): i for i, item in enumerate(self.item_ids)}

    @property
    def num_items(self) -> int:
        """``I``."""
        return len(self.item_ids)

    @classmethod
    def from_data(cls, data: Any, needs: Sequence[Need]) -> Catalogue:
        """The catalogue of a dataset (:class:`~flexrec.data.dataset.InteractionData`) at its
        end, with the trend-window counts of each bound need."""
        from flexrec.data.features import ItemClock

        items = np.arange(data.num_items, dtype=np.int64)
        as_of = int(data.timestamp.max()) + 1 if data.num_interactions else 0
        clock = ItemClock(data, np.ones(data.num_interactions, dtype=bool))
        times = np.full(data.num_items, as_of, dtype=np.int64)
        count, mean = clock.before(items, times)
        recent = {
            need.name: clock.window(items, times, int(need.window or data.trend_window))
            for need in needs
        }
        return cls(
            dataset=str(data.name),
            item_ids=[_python(v) for v in data.item_ids.tolist()],
            titles=[str(t) for t in data.titles.tolist()],
            years=[int(y) for y in data.years.tolist()],
            categories=list(data.categories),
            item_categories=np.asarray(data.item_categories, dtype=bool),
            count=np.asarray(count, dtype=np.int64),
            mean_label=np.asarray(mean, dtype=np.float64),
            recent={k: np.asarray(v, dtype=np.int64) for k, v in recent.items()},
            num_users=int(data.num_users),
            scale=asdict(data.scale),
            trend_window=int(data.trend_window),
            as_of=as_of,
        )

    def to_payload(self) -> dict[str, Any]:
        """Plain containers and tensors (``torch.load(weights_only=True)`` reads them back)."""
        return {
            "dataset": self.dataset,
            "item_ids": list(self.item_ids),
            "titles": list(self.titles),
            "years": list(self.years),
            "categories": list(self.categories),
            "item_categories": torch.from_numpy(self.item_categories.copy()),
            "count": torch.from_numpy(self.count.copy()),
            "mean_label": torch.from_numpy(self.mean_label.copy()),
            "recent": {k: torch.from_numpy(v.copy()) for k, v in self.recent.items()},
            "num_users": self.num_users,
            "scale": dict(self.scale),
            "trend_window": self.trend_window,
            "as_of": self.as_of,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Catalogue:
        """Inverse of :meth:`to_payload`."""
        return cls(
            dataset=payload["dataset"],
            item_ids=list(payload["item_ids"]),
            titles=list(payload["titles"]),
            years=list(payload["years"]),
            categories=list(payload["categories"]),
            item_categories=payload["item_categories"].numpy().astype(bool),
            count=payload["count"].numpy(),
            mean_label=payload["mean_label"].numpy(),
            recent={k: v.numpy() for k, v in payload["recent"].items()},
            num_users=int(payload["num_users"]),
            scale=dict(payload["scale"]),
            trend_window=int(payload["trend_window"]),
            as_of=int(payload["as_of"]),
        )

    def label_scale(self) -> Any:
        """The :class:`~flexrec.data.dataset.LabelScale`."""
        from flexrec.data.dataset import LabelScale

        return LabelScale(**self.scale)

    def title(self, index: int) -> str:
        """``"Title (year)"`` of an item, as people know it."""
        year = self.years[index]
        return f"{self.titles[index]} ({year})" if year > 0 else self.titles[index]

    def stats(self, index: int, need: str, label: float = math.nan) -> ItemStats:
        """What a need's prompt text may say about an item (``label``: the user's own)."""
        categories = [self.categories[c] for c in np.flatnonzero(self.item_categories[index])]
        return ItemStats(
            self.titles[index],
            self.years[index],
            categories,
            count=int(self.count[index]),
            mean_label=float(self.mean_label[index]),
            recent=int(self.recent[need][index]),
            label=label,
        )


def _python(value: Any) -> Any:
    """A raw id as a JSON value: an int stays an int, anything else becomes a string."""
    if isinstance(value, bool | np.bool_):
        return str(value)
    if isinstance(value, int | np.integer):
        return int(value)
    return str(value)


@dataclass(eq=False)
class ServedModel:
    """A policy ready to rank, with the needs it was trained on and its item catalogue.

    Attributes:
        policy: the policy, in eval mode.
        policy_spec: its registry spec (``{name, args}``).
        info: the data facts it was built with.
        catalogue: the items it knows.
        need_specs: the need specs, in the order of ``info.needs`` (the need vocabulary).
        text_style: the prompt text style of the run's data (``full`` or ``compact``).
        history_len: the history length the run trained on; longer histories are cut to their
            most recent items, as in training.
        num_candidates: the candidate count the run trained on.
        with_text: whether the run built prompt text (LLM policies need it).
        source: where the model was loaded from.
    """

    policy: Policy
    policy_spec: Any
    info: DataInfo
    catalogue: Catalogue
    need_specs: list[Any]
    text_style: str
    history_len: int
    num_candidates: int
    with_text: bool
    source: str
    needs: list[Need] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        scale = self.catalogue.label_scale()
        self.needs = [
            registries.need.build(spec).bind(scale, self.catalogue.trend_window, self.text_style)
            for spec in self.need_specs
        ]
        names = tuple(n.name for n in self.needs)
        if names != tuple(self.info.needs):
            raise ConfigError(
                f"the needs {list(names)} do not match the model's need vocabulary "
                f"{list(self.info.needs)}"
            )
        self.policy.eval()

    @property
    def kind(self) -> str:
        """The policy's registered name (``native``, ``llm``, ...)."""
        return str(type(self.policy).name)

    def settings(self) -> dict[str, Any]:
        """What an export records next to the weights to rebuild this model."""
        return {
            "policy": plain(self.policy_spec),
            "data_info": plain(asdict(self.info)),
            "needs": plain(self.need_specs),
            "text_style": self.text_style,
            "history_len": self.history_len,
            "num_candidates": self.num_candidates,
            "with_text": self.with_text,
        }


def _info(value: Mapping[str, Any]) -> DataInfo:
    values = dict(value)
    values["needs"] = tuple(values["needs"])
    values["feature_names"] = tuple(values.get("feature_names") or ())
    return DataInfo(**values)


def _need_specs(needs: Sequence[Any], eval_needs: Sequence[Any] | None) -> list[Any]:
    """The need specs in the data module's vocabulary order: training needs, then evaluated
    needs never trained on."""
    specs, names = [], set()
    for spec in [*needs, *(eval_needs or [])]:
        name = registries.need.build(spec).name
        if name not in names:
            names.add(name)
            specs.append(plain(spec))
    return specs


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"cannot import the data module {path!r} ({exc})") from exc


def load_checkpoint(path: str | Path) -> ServedModel:
    """A served model from a training checkpoint and the data its run was trained on.

    Raises:
        ConfigError: the file is not a readable checkpoint, its run did not train on a dataset
            (:class:`~flexrec.data.datamodule.FlexRecDataModule`), or the data found now differs
            from the data it was trained on.
    """
    from flexrec.data.datamodule import FlexRecDataModule
    from flexrec.module import FlexRecModule

    checkpoint = read_checkpoint(path, "checkpoint", weights_only=False)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    data_hp = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    class_path = data_hp.pop("_class_path", None)
    data_hp.pop("_instantiator", None)
    data_class = _import(class_path) if class_path else None
    if not (isinstance(data_class, type) and issubclass(data_class, FlexRecDataModule)):
        raise ConfigError(
            f"checkpoint {str(path)!r} was trained on {class_path or 'an unnamed data module'}, "
            "which has no item catalogue: serving and export need a run on a dataset "
            "(flexrec.data.datamodule.FlexRecDataModule)"
        )
    datamodule = data_class(**data_hp)
    datamodule.setup()
    info = datamodule.info
    saved = hparams.get("data_info")
    conflicts = data_info_conflicts(saved, asdict(info)) if saved else []
    if conflicts:
        raise ConfigError(
            f"checkpoint {str(path)!r}: the data found now differs from the data it was trained "
            f"on: {'; '.join(conflicts)}"
        )
    extra: dict[str, Any] = {} if saved else {"data_info": asdict(info)}
    module = FlexRecModule.load_from_checkpoint(
        str(path), map_location="cpu", weights_only=False, **extra
    )
    policy = module.policy
    policy.prepare(datamodule)
    hp: Any = datamodule.hparams
    return ServedModel(
        policy=policy,
        policy_spec=plain(cast(Any, module.hparams).policy),
        info=info,
        catalogue=Catalogue.from_data(datamodule.data, datamodule.needs),
        need_specs=_need_specs(hp.needs, hp.eval_needs),
        text_style=str(hp.text_style),
        history_len=int(hp.history_len),
        num_candidates=int(hp.num_candidates),
        with_text=bool(hp.with_text),
        source=str(path),
    )


def _settings_model(
    settings: Mapping[str, Any], policy: Policy, catalogue: Catalogue, source: str
) -> ServedModel:
    return ServedModel(
        policy=policy,
        policy_spec=settings["policy"],
        info=_info(settings["data_info"]),
        catalogue=catalogue,
        need_specs=list(settings["needs"]),
        text_style=str(settings["text_style"]),
        history_len=int(settings["history_len"]),
        num_candidates=int(settings["num_candidates"]),
        with_text=bool(settings["with_text"]),
        source=source,
    )


def _load_native(path: Path, payload: Mapping[str, Any]) -> ServedModel:
    if payload.get("version") != EXPORT_VERSION:
        raise ConfigError(
            f"{path}: export version {payload.get('version')!r}, this flexrec reads "
            f"version {EXPORT_VERSION}"
        )
    settings = payload["settings"]
    info = _info(settings["data_info"])
    policy = registries.policy.build(settings["policy"], **info.context())
    try:
        policy.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:300]
        raise ConfigError(f"{path}: the weights do not fit the policy ({first})") from exc
    return _settings_model(
        settings, policy, Catalogue.from_payload(payload["catalogue"]), str(path)
    )


def load_llm_export(folder: Path, manifest: Mapping[str, Any]) -> Policy:
    """The :class:`~flexrec.policies.llm.LLMPolicy` of an LLM export folder.

    Under LoRA the base model is rebuilt from the policy's own ``model`` setting (``smollm2`` or
    the path it was trained from) and the exported adapter loaded into it; a full model is loaded
    from the folder.
    """
    from flexrec.policies.llm import LLMPolicy

    spec = manifest["settings"]["policy"]
    args = dict(spec.get("args") or {}) if isinstance(spec, Mapping) else {}
    if manifest.get("weights") == "full_model":
        return LLMPolicy(**{**args, "model": str(folder), "gguf_file": None, "lora": None})
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    policy = LLMPolicy(**args)
    weights = load_file(str(folder / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(policy.model, weights)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ConfigError(
            f"{folder}: the adapter does not fit the policy (unexpected {unexpected[:3]})"
        )
    return policy


def _load_llm(folder: Path) -> ServedModel:
    manifest = json.loads((folder / LLM_MANIFEST).read_text())
    if manifest.get("format") != LLM_FORMAT:
        raise ConfigError(f"{folder}: {LLM_MANIFEST} is not a flexrec LLM export manifest")
    policy = load_llm_export(folder, manifest)
    payload = torch.load(folder / CATALOGUE_FILE, map_location="cpu", weights_only=True)
    catalogue = Catalogue.from_payload(payload)
    return _settings_model(manifest["settings"], policy, catalogue, str(folder))


def load_served_model(path: str | Path) -> ServedModel:
    """Load a checkpoint, a run folder (its ``checkpoints/last.ckpt``), a native export file
    or an LLM export folder (see the module docstring).

    Raises:
        ConfigError: nothing there, or not one of those.
    """
    target = Path(path)
    if target.is_dir():
        if (target / LLM_MANIFEST).is_file():
            return _load_llm(target)
        last = target / "checkpoints" / "last.ckpt"
        if last.exists():
            return load_checkpoint(last)
        raise ConfigError(
            f"{target}: neither a run folder (no checkpoints/last.ckpt) nor an LLM export (no "
            f"{LLM_MANIFEST}); give a checkpoint (.ckpt), a run folder or an export written by "
            "`flexrec export`"
        )
    if not target.is_file():
        raise ConfigError(f"{target}: no such file or folder")
    with open(target, "rb") as handle:
        head = handle.read(4)
    if head[:2] != b"PK":  # torch.save files are zip archives
        raise ConfigError(f"{target}: not a checkpoint nor a flexrec export")
    try:
        payload = torch.load(target, map_location="cpu", weights_only=True)
    except Exception:
        payload = None  # a Lightning checkpoint may hold objects weights_only refuses
    if isinstance(payload, dict) and payload.get("format") == NATIVE_FORMAT:
        return _load_native(target, payload)
    if isinstance(payload, dict) and "format" in payload:
        raise ConfigError(f"{target}: unknown export format {payload['format']!r}")
    return load_checkpoint(target)
