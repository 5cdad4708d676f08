"""``cxrbench fit|validate|test|predict --config <yaml>``: LightningCLI over every method and DataModule."""

from __future__ import annotations

import warnings

from lightning.pytorch.cli import LightningCLI

from data_modules.base import CXRDataModule

from .methods.base import Method


class CXRBenchCLI(LightningCLI):
    def instantiate_classes(self) -> None:
        """A config whose parts do not fit together (a segmentation method on a classification
        DataModule, an artifact of the wrong kind, bad data) ends with its message, not a traceback,
        before any training starts."""
        try:
            super().instantiate_classes()
        except ValueError as err:  # DataError and ArtifactError are ValueErrors
            data = (self.config.get(self.subcommand) if self.subcommand else self.config).get("data")
            where = f" (data: {getattr(data, 'class_path', data)})" if data is not None else ""
            raise SystemExit(f"cxrbench: error: the config cannot be built{where}: {_root_cause(err)}") from None

    def add_arguments_to_parser(self, parser) -> None:
        # The model learns its classes from the data: one source of truth, no config drift.
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.classes", "model.init_args.class_names", apply_on="instantiate")
        parser.link_arguments("data.task", "model.init_args.task", apply_on="instantiate")


def _root_cause(err: BaseException) -> BaseException:
    """The error our code raised, under jsonargparse's "does not validate against any subtype" wrapper."""
    seen = err
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__
        if not type(seen).__module__.startswith("jsonargparse"):
            return seen
    return err


def build_cli(args: list[str], run: bool = True) -> CXRBenchCLI:
    # `cxrbench fit …` hands its own argv over as ``args``: Lightning's warning about both is noise here.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    return CXRBenchCLI(Method, CXRDataModule, subclass_mode_model=True, subclass_mode_data=True, args=args,
                       run=run, save_config_kwargs={"overwrite": True})


def run(args: list[str]) -> None:
    build_cli(args)
