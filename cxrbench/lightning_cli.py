"""``cxrbench fit|validate|test|predict --config <yaml>``: LightningCLI over every method and DataModule."""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

from data_modules.base import CXRDataModule

from .methods.base import Method


class CXRBenchCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # The model learns its classes from the data: one source of truth, no config drift.
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.classes", "model.init_args.class_names", apply_on="instantiate")
        parser.link_arguments("data.task", "model.init_args.task", apply_on="instantiate")


def build_cli(args: list[str], run: bool = True) -> CXRBenchCLI:
    return CXRBenchCLI(Method, CXRDataModule, subclass_mode_model=True, subclass_mode_data=True, args=args,
                       run=run, save_config_kwargs={"overwrite": True})


def run(args: list[str]) -> None:
    build_cli(args)
