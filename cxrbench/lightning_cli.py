"""``cxrbench fit|validate|test|predict --config <yaml>``: LightningCLI over every method and DataModule."""

from __future__ import annotations

import warnings
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from data_modules.base import CXRDataModule

from .methods.base import Method


class CXRBenchCLI(LightningCLI):
    def instantiate_classes(self) -> None:
        """A config whose parts do not fit together (a segmentation method on a classification
        DataModule, an artifact of the wrong kind, bad data) ends with its message, not a traceback,
        before any training starts. A configured WandbLogger's project/entity names are checked first
        (``wandb_names``): a malformed one stops here, before the Trainer or any log folder exists."""
        from .wandb_names import WandbNameError, check_logger_config

        config = self.config.get(self.subcommand) if self.subcommand else self.config
        try:
            check_logger_config((config.get("trainer") or {}).get("logger"))
        except WandbNameError as err:
            raise SystemExit(f"cxrbench: error: {err}") from None
        try:
            super().instantiate_classes()
        except ValueError as err:  # DataError and ArtifactError are ValueErrors
            data = (self.config.get(self.subcommand) if self.subcommand else self.config).get("data")
            where = f" (data: {getattr(data, 'class_path', data)})" if data is not None else ""
            raise SystemExit(f"cxrbench: error: the config cannot be built{where}: {_root_cause(err)}") from None

    def before_instantiate_classes(self) -> None:
        """``data.batch_size`` is the global batch (the paper's), whatever the number of devices: on N
        devices each loader gets batch_size / N, so the lr stays the paper's, and BatchNorm statistics are
        synchronised across devices (``sync_batchnorm``, a no-op for models without BatchNorm)."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        trainer, data = config.get("trainer"), config.get("data")
        init = getattr(data, "init_args", None)
        if trainer is None or init is None or "batch_size" not in init:
            return
        world = world_size(trainer.get("devices"), trainer.get("accelerator"), trainer.get("num_nodes") or 1)
        if world <= 1:
            return
        batch = int(init["batch_size"])
        if batch % world:
            raise SystemExit(f"cxrbench: error: data.batch_size {batch} is the global batch and must divide evenly "
                             f"over the {world} devices (devices × num_nodes); choose a multiple of {world}")
        init["batch_size"] = batch // world
        trainer["sync_batchnorm"] = True

    def before_predict(self) -> None:
        from .callbacks import WritePredictions

        if not any(isinstance(c, WritePredictions) for c in self.trainer.callbacks):
            self.trainer.callbacks.append(WritePredictions())

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if kwargs.get("ckpt_path") in ("best", "last") and not self.trainer.checkpoint_callback.best_model_path:
            kwargs["ckpt_path"] = str(self._checkpoint_on_disk(kwargs["ckpt_path"]))
        return kwargs

    def _checkpoint_on_disk(self, which: str) -> Path:
        """``--ckpt_path best|last`` in a fresh process: the newest ``last.ckpt`` under this config's
        logger folder, or the best checkpoint its ModelCheckpoint recorded (read with weights_only)."""
        import torch

        logger = self.trainer.logger
        root = Path(logger.root_dir if logger is not None else self.trainer.default_root_dir)
        found = sorted(root.glob("**/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise SystemExit(f"cxrbench: error: --ckpt_path {which}: no checkpoints/last.ckpt under {root} "
                             "(run `cxrbench fit` with this config first, or give the checkpoint's path)")
        if which == "last":
            return found[-1]
        state = torch.load(found[-1], map_location="cpu", weights_only=True)
        best = [v.get("best_model_path") for k, v in state.get("callbacks", {}).items() if k.startswith("ModelCheckpoint")]
        best = [b for b in best if b and Path(b).is_file()]
        if not best:
            raise SystemExit(f"cxrbench: error: --ckpt_path best: {found[-1]} records no best checkpoint that exists; "
                             "use --ckpt_path last or a path")
        return Path(best[0])

    def add_arguments_to_parser(self, parser) -> None:
        # The model learns its classes from the data: one source of truth, no config drift.
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.classes", "model.init_args.class_names", apply_on="instantiate")
        parser.link_arguments("data.task", "model.init_args.task", apply_on="instantiate")


def world_size(devices, accelerator, num_nodes: int = 1) -> int:
    """Processes a Trainer with these settings will run (before it exists): ``devices`` as Lightning reads
    it (an int, "-1"/"auto" = every GPU on a GPU accelerator and 1 on the CPU, a list or "0,1" string)."""
    import torch

    gpus = torch.cuda.device_count() if accelerator not in ("cpu", "mps") else 0
    if isinstance(devices, (list, tuple)):
        n = len(devices)
    elif devices in (None, "auto"):
        n = gpus if gpus and accelerator in (None, "auto", "gpu", "cuda") else 1
    elif isinstance(devices, str) and "," in devices:
        n = len([d for d in devices.split(",") if d.strip()])
    else:
        n = int(devices)
        n = (gpus or 1) if n == -1 else n
    return max(1, n) * int(num_nodes)


def _root_cause(err: BaseException) -> BaseException:
    """The error our code raised, under jsonargparse's "does not validate against any subtype" wrapper."""
    seen = err
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__
        if not type(seen).__module__.startswith("jsonargparse"):
            return seen
    return err


# `cxrbench fit …` and the runner hand their own argv over as ``args``: Lightning's warning about both is noise.
warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")


def build_cli(args: list[str], run: bool = True) -> CXRBenchCLI:
    return CXRBenchCLI(Method, CXRDataModule, subclass_mode_model=True, subclass_mode_data=True, args=args,
                       run=run, save_config_kwargs={"overwrite": True})


def registry_names(args: list[str]) -> list[str]:
    """``--model amm`` (the registry name the README and ``--help`` show) as the class path LightningCLI
    resolves; class names (``--model AMM``) and class paths pass through."""
    from .methods import METHODS

    out = list(args)
    for i, a in enumerate(out):
        if a in ("--model", "--model.class_path") and i + 1 < len(out) and out[i + 1] in METHODS:
            out[i + 1] = f"{METHODS[out[i + 1]].__module__}.{METHODS[out[i + 1]].__name__}"
        elif a.startswith(("--model=", "--model.class_path=")) and a.split("=", 1)[1] in METHODS:
            cls = METHODS[a.split("=", 1)[1]]
            out[i] = f"{a.split('=', 1)[0]}={cls.__module__}.{cls.__name__}"
    return out


def run(args: list[str]) -> None:
    build_cli(registry_names(args))


class _Parsed(Exception):
    pass


class _ParseOnly(CXRBenchCLI):
    def before_instantiate_classes(self) -> None:
        try:
            super().before_instantiate_classes()  # a global batch that does not divide over the devices
        except SystemExit as err:
            raise ValueError(str(err).removeprefix("cxrbench: error: ")) from None

    def instantiate_classes(self) -> None:
        raise _Parsed


def check_config(config: dict) -> None:
    """Parse a config with the same LightningCLI parser a cell uses — unknown keys, wrong types and
    unknown classes are refused — without building a model or reading any data (``--dry-run``).
    Raises ``ValueError`` with jsonargparse's message."""
    import logging

    import yaml

    quiet = logging.getLogger("lightning.fabric.utilities.seed")
    level, quiet.level = quiet.level, logging.WARNING  # "Seed set to 0" is noise in a check
    try:
        _ParseOnly(Method, CXRDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
                   args=["--config", yaml.safe_dump(config)], parser_kwargs={"exit_on_error": False})
    except _Parsed:
        return
    except Exception as err:  # jsonargparse's ArgumentError and friends
        noise = ("Given value", "- Expected a <class 'NoneType'>", "Subtypes:", "Does not validate against any",
                 "Errors:")
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip() and not ln.strip().startswith(noise)]
        raise ValueError(" ".join(lines) or repr(err)) from None
    finally:
        quiet.level = level
