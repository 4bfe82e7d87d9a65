"""Bad settings, broken files and refused writes: one line on stderr and exit status 2.

The commands run in-process through ``flexrec.cli.main`` (which returns the exit status), on the
synthetic task or the embedded MovieLens latest-small, so each case takes a second or two.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import torch

from flexrec.checkpoints import (
    AtomicCheckpointIO,
    check_data_info,
    data_info_conflicts,
    setting_conflicts,
)
from flexrec.cli import main
from flexrec.data.datamodule import FlexRecDataModule
from flexrec.data.loaders import EMBEDDED_DIR
from flexrec.errors import ConfigError, OutputError, PluginError
from flexrec.module import FlexRecModule
from flexrec.plugin.manager import get_plugin_manager
from flexrec.plugin.spec import hookimpl
from flexrec.registry import registries

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = REPO / "configs" / "synthetic.yaml"
QUICKSTART = REPO / "configs" / "quickstart.yaml"
QUICK = ("--trainer.max_epochs=1", "--trainer.enable_progress_bar=false")
SMALL = (
    "--data.init_args.num_train=32",
    "--data.init_args.num_val=16",
    "--data.init_args.batch_size=16",
    "--trainer.enable_model_summary=false",
    *QUICK,
)
MOVIELENS_SMALL = (
    "--data.init_args.max_train_tasks=32",
    "--data.init_args.max_eval_tasks=16",
    "--data.init_args.with_text=false",
    *QUICK,
)
# what Lightning itself logs to stderr when it builds a trainer, before a fault during the run
LIGHTNING_NOTICES = ("GPU available", "TPU available", "HPU available", "💡 Tip")


def _one_line_error(capsys: pytest.CaptureFixture[str], status: int, message: str) -> str:
    assert status == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(LIGHTNING_NOTICES)]
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith("flexrec: error: ") and message in lines[0], lines[0]
    return lines[0]


def _fit(tmp_path: Path, *args: str, config: Path = SYNTHETIC) -> int:
    small = SMALL if config == SYNTHETIC else MOVIELENS_SMALL
    root = tmp_path / "run"
    return main(["fit", f"--config={config}", *small, f"--trainer.default_root_dir={root}", *args])


# ---------------------------------------------------------------- 1. numeric settings


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--model.group_size=0", "group_size must be >= 1, got 0"),
        ("--model.group_size=-3", "group_size must be >= 1, got -3"),
        ("--model.temperature=0", "temperature must be > 0, got 0"),
        ("--model.ppo_epochs=0", "ppo_epochs must be >= 1, got 0"),
        ("--data.init_args.batch_size=0", "batch_size must be >= 1, got 0"),
        ("--data.init_args.num_candidates=1", "num_candidates must be >= 2, got 1"),
        ("--data.init_args.needs=[]", "needs is empty"),
    ],
)
def test_bad_numbers_of_the_synthetic_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, message: str
) -> None:
    _one_line_error(capsys, _fit(tmp_path, override), message)
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--data.init_args.history_len=-1", "history_len must be >= 0, got -1"),
        ("--data.init_args.batch_size=0", "batch_size must be >= 1, got 0"),
        ("--data.init_args.num_candidates=1", "num_candidates must be >= 2, got 1"),
        ("--data.init_args.needs=[]", "needs is empty"),
        ("--data.init_args.dataset=ml-latest-smal", "unknown dataset 'ml-latest-smal'"),
        (
            "--data.init_args.num_candidates=3000",
            "no train tasks: num_candidates=3000 needs users with at least 3001 interactions "
            "(the most any user of ml-latest-small has is 2698)",
        ),
    ],
)
def test_bad_data_settings_of_movielens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, message: str
) -> None:
    status = _fit(tmp_path, override, config=QUICKSTART)
    _one_line_error(capsys, status, message)
    assert not list(tmp_path.rglob("*.ckpt"))


def test_settings_are_checked_where_they_are_owned() -> None:
    with pytest.raises(ConfigError, match="group_size must be >= 1"):
        FlexRecModule(group_size=0)
    with pytest.raises(ConfigError, match="eval_ks must be >= 1"):
        FlexRecModule(eval_ks=(0,))
    with pytest.raises(ConfigError, match="history_len must be >= 0"):
        FlexRecDataModule(history_len=-2)
    with pytest.raises(ConfigError, match="sparse_p must be > 0 and <= 1 or null, got 0"):
        FlexRecDataModule(sparse_p=0)
    with pytest.raises(ConfigError, match="no train tasks: num_candidates=3000"):
        FlexRecDataModule(num_candidates=3000, with_text=False).setup()


# ---------------------------------------------------------------- 2. broken files and plug-ins


def _truncated_movielens(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-truncated"
    shutil.copytree(EMBEDDED_DIR / "ml-latest-small", folder)
    ratings = folder / "ratings.csv.gz"
    ratings.write_bytes(ratings.read_bytes()[:100_000])  # an interrupted download
    return folder


def test_a_truncated_gz_file_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _truncated_movielens(tmp_path)
    with pytest.raises(EOFError):  # what pandas raised to the user before
        gzip.decompress((folder / "ratings.csv.gz").read_bytes())
    message = f"{folder / 'ratings.csv.gz'}: truncated or corrupt compressed file"
    _one_line_error(capsys, main(["data", "info", str(folder)]), message)
    status = _fit(tmp_path, f"--data.init_args.dataset={folder}", config=QUICKSTART)
    _one_line_error(capsys, status, message)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The last checkpoint of a one-batch fit of the synthetic task."""
    root = tmp_path_factory.mktemp("fit") / "run"
    args = ["fit", f"--config={SYNTHETIC}", *SMALL, "--trainer.limit_train_batches=1"]
    assert main([*args, f"--trainer.default_root_dir={root}"]) == 0
    return root / "logs" / "version_0" / "checkpoints" / "last.ckpt"


def _validate(tmp_path: Path, ckpt: Path | str, *args: str) -> int:
    root = f"--trainer.default_root_dir={tmp_path / 'eval'}"
    return main(["validate", f"--config={SYNTHETIC}", *SMALL, root, f"--ckpt_path={ckpt}", *args])


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("truncated", "not a readable checkpoint (PytorchStreamReader failed reading zip archive"),
        ("random", "not a readable checkpoint"),
        ("empty", "not a readable checkpoint"),
        ("missing", "no checkpoint file there"),
        ("tensor", "not a Lightning checkpoint (no state_dict)"),
    ],
)
def test_an_unreadable_checkpoint_is_one_line_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    checkpoint: Path,
    kind: str,
    message: str,
) -> None:
    bad = tmp_path / f"{kind}.ckpt"
    if kind == "truncated":
        bad.write_bytes(checkpoint.read_bytes()[:2000])
    elif kind == "random":
        bad.write_bytes(torch.randint(0, 256, (3000,), dtype=torch.uint8).numpy().tobytes())
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "tensor":
        torch.save(torch.zeros(3), bad)
    line = _one_line_error(capsys, _validate(tmp_path, bad), message)
    assert f"ckpt_path {str(bad)!r}" in line
    assert not (tmp_path / "eval").exists()


def test_a_plugin_whose_hook_raises_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_rewards.py").write_text(
        "from flexrec.plugin.spec import hookimpl\n\n\n"
        "@hookimpl\ndef flexrec_register_rewards():\n    return {}['swap']\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    status = _fit(tmp_path, "--model.plugins=[broken_rewards]")
    _one_line_error(
        capsys,
        status,
        "plug-in 'broken_rewards': hook flexrec_register_rewards raised KeyError: 'swap'",
    )


def test_a_plugin_object_registered_at_run_time_is_named_too() -> None:
    class Broken:
        @hookimpl
        def flexrec_register_advantage_estimators(self) -> list[type]:
            raise RuntimeError("no estimators today")

    get_plugin_manager().register(Broken(), name="broken-estimators")
    registries.invalidate()
    with pytest.raises(PluginError, match="plug-in 'broken-estimators': hook .* no estimators"):
        registries.estimator.names()


# ---------------------------------------------------------------- 3. contradicting checkpoints


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "--model.policy={name: native, args: {dim: 16}}",
            "model.policy.args.dim: 32 in the checkpoint, 16 here",
        ),
        ("--model.policy=popularity", "model.policy: 'native' in the checkpoint, 'popularity'"),
        ("--data.init_args.num_items=300", "data.num_items: 500 in the checkpoint, 300 here"),
        ("--data.init_args.needs=[maximize_interest]", "data.needs: ['maximize_interest', "),
    ],
)
def test_a_checkpoint_contradicting_explicit_settings_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    checkpoint: Path,
    override: str,
    message: str,
) -> None:
    line = _one_line_error(capsys, _validate(tmp_path, checkpoint, override), message)
    assert "was trained with other settings" in line
    assert _validate(tmp_path, checkpoint) == 0  # the settings it was trained with


def test_conflicts_of_dataset_and_data_facts() -> None:
    saved = {
        "hyper_parameters": {"policy": "native", "data_info": {"num_items": 9742}},
        "datamodule_hyper_parameters": {"dataset": "ml-latest-small", "batch_size": 16},
    }
    current = {"dataset": "ml-100k", "batch_size": 64}
    assert setting_conflicts(saved, "native", "native", current) == [
        "data.dataset: 'ml-latest-small' in the checkpoint, 'ml-100k' here"
    ]
    # a policy left at its default is taken from the checkpoint (LightningCLI), so no conflict
    assert not setting_conflicts(saved, {"name": "native"}, "native", {"batch_size": 1})
    assert data_info_conflicts({"num_items": 9742, "needs": ["a"]}, {"num_items": 1682}) == [
        "data num_items: 9742 in the checkpoint, 1682 here"
    ]
    # what FlexRecModule.on_load_checkpoint checks, whoever loads the checkpoint
    with pytest.raises(ConfigError, match="other data: data num_items: 9742 in the checkpoint"):
        check_data_info(saved, {"num_items": 1682, "needs": ("a",)})
    check_data_info(saved, {"num_items": 9742, "needs": ("a",)})


# ---------------------------------------------------------------- 4. refused writes


def test_an_output_folder_through_a_file_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    root = blocker / "run"
    status = main(["fit", f"--config={SYNTHETIC}", *SMALL, f"--trainer.default_root_dir={root}"])
    _one_line_error(capsys, status, f"cannot write {root}: Not a directory")


def test_a_checkpoint_that_cannot_be_written_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    status = _fit(
        tmp_path,
        "--trainer.limit_train_batches=1",
        "--trainer.callbacks+=ModelCheckpoint",
        f"--trainer.callbacks.dirpath={blocker / 'checkpoints'}",
    )
    _one_line_error(capsys, status, f"cannot write checkpoint {blocker / 'checkpoints'}/")
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("*.tmp"))


def test_checkpoints_are_written_whole_or_not_at_all(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "ckpts" / "a.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(2))
    assert [p.name for p in path.parent.iterdir()] == ["a.ckpt"]
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="cannot write checkpoint .*b.ckpt: File exists"):
        io.save_checkpoint({"state_dict": {}}, tmp_path / "file" / "b.ckpt")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        path.write_bytes(path.read_bytes()[:100])
        io.load_checkpoint(path)


# ---------------------------------------------------------------- 5. YAML errors


def test_a_yaml_syntax_error_names_the_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text(SYNTHETIC.read_text().replace("group_size: 8", "group_size: [8"))
    status = main(["fit", f"--config={config}", *SMALL])
    _one_line_error(capsys, status, f"{config}: not valid YAML (line ")
