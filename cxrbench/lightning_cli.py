"""``cxrbench fit|validate|test|predict --config <yaml>``: LightningCLI over every method and DataModule."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from data_modules.base import CXRDataModule

from .methods.base import Method


class CXRBenchCLI(LightningCLI):
    """LightningCLI with cxrbench's checks, and the Trainer built with every callback and logger cxrbench
    adds (``instantiate_trainer``): nothing is appended to a Trainer once it exists.

    ``trainer_setup(cli, callbacks) -> dict``: extra Trainer arguments from the caller (the sweep runner:
    its loggers, its callbacks, its checkpoint policy), given the config's callbacks, with the model built.
    """

    def __init__(self, *args, trainer_setup=None, **kwargs):
        self.trainer_setup = trainer_setup
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser, args) -> None:
        """Lightning then takes a checkpoint's saved hyperparameters over the config's model: a checkpoint
        of another method (a GAP checkpoint under an AMM config) would silently become the model. Refused
        here, before anything is built, naming both."""
        super().parse_arguments(parser, args)
        config = self.config.get(self.config.get("subcommand")) if self.config.get("subcommand") else None
        ckpt = config.get("ckpt_path") if config is not None else None
        if ckpt and Path(ckpt).is_file():
            import torch

            from .recipe import MODEL_LINKED, _plain

            saved = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True).get("hyper_parameters", {})
            theirs = saved.get("_class_path")
            model = config.get("model")
            ours = getattr(model, "class_path", None)
            if theirs and ours and not same_class(theirs, ours):
                raise SystemExit(f"cxrbench: error: --ckpt_path {ckpt} holds a {theirs} checkpoint; this config's "
                                 f"model is {ours}: test it with its own config, or name a checkpoint of {ours}")
            args = _plain(getattr(model, "init_args", None) or {})
            same = lambda a, b: json.dumps(_plain(a), sort_keys=True, default=str) == json.dumps(_plain(b), sort_keys=True, default=str)  # noqa: E731
            differ = [k for k in sorted(args) if k in saved and k not in MODEL_LINKED and not same(args[k], saved[k])]
            if differ:
                refuse_other_architecture(ckpt, ours, args, saved, differ)
            if differ:  # Lightning rebuilds the model from the checkpoint's arguments: say so, in one line
                what = "; ".join(f"{k}: config {args[k]!r}, checkpoint {saved[k]!r}" for k in differ[:3])
                print(f"cxrbench: note: --ckpt_path {ckpt} was trained with other model arguments than this config's "
                      f"({what}{' …' if len(differ) > 3 else ''}); the model is built with the checkpoint's, and "
                      "result.json records them", file=sys.stderr)

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
        from .callbacks import WriteResult

        for writer in (c for c in self.trainer.callbacks if isinstance(c, WriteResult)):
            writer.recipe = self.recipe  # the record says which recipe it scored (the leaderboard's row)

    def before_instantiate_classes(self) -> None:
        """``data.batch_size`` is the global batch (the paper's), whatever the number of devices: on N
        devices each loader gets batch_size / N, so the lr stays the paper's, and BatchNorm statistics are
        synchronised across GPUs (``sync_batchnorm``, a no-op for models without BatchNorm; CPU processes
        cannot, and keep their own)."""
        from .recipe import recipe_of

        config = self.config.get(self.subcommand) if self.subcommand else self.config
        self.recipe = recipe_of(config)  # before the batch is split: the recipe holds the global batch
        trainer, data = config.get("trainer"), config.get("data")
        default_run_folder(config)
        init = getattr(data, "init_args", None)
        gpu_defaults(trainer, init)
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
        model = _model_class(config.get("model"))
        if batch // world < 2 and getattr(model, "contrasts_batch", False):
            raise SystemExit(f"cxrbench: error: data.batch_size {batch} is the global batch: over {world} devices it "
                             f"leaves {batch // world} image per process, and {model.__name__} contrasts the images of "
                             f"a batch (its projector's BatchNorm needs at least 2 per process); use a global batch of "
                             f"at least {2 * world}")
        # SyncBatchNorm exists for GPU modules only: CPU processes (gloo, the tests' DDP) keep per-process
        # BatchNorm statistics, the one thing a CPU multi-process run computes differently from one process
        trainer["sync_batchnorm"] = on_gpu(trainer.get("accelerator"))

    def instantiate_trainer(self, **kwargs):
        """For ``fit``: checkpoints carry this recipe's fingerprint (``RecipeStamp``), and a method that
        produces artifacts (a pretraining's encoder, stage 1's heatmaps, the thorax-box regressor) exports
        them after fit, as a sweep cell does. For ``predict``: every image's outputs are written; for ``test``:
        a result record and the predictions, whatever the config (``WriteResult``). Then the
        caller's ``trainer_setup``. All of it handed to LightningCLI's own Trainer construction."""
        from .callbacks import ExportArtifacts, RecipeStamp, StopOnNonFiniteLoss, WritePredictions, WriteResult
        from .recipe import fingerprint

        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        given = (config.get("trainer") or {}).get("callbacks")
        callbacks = [] if given is None else list(given) if isinstance(given, (list, tuple)) else [given]
        have = lambda kind: any(isinstance(c, kind) for c in callbacks)  # noqa: E731
        if self.subcommand == "fit":
            if not have(RecipeStamp):
                callbacks.append(RecipeStamp(fingerprint(self.recipe)))
            if not have(StopOnNonFiniteLoss):  # a diverged fit stops, and exports nothing
                callbacks.append(StopOnNonFiniteLoss())
            if getattr(self.model, "artifacts", ()) and not have(ExportArtifacts):
                callbacks.append(ExportArtifacts())
        if self.subcommand == "predict" and not have(WritePredictions):
            callbacks.append(WritePredictions())
        if self.subcommand == "test" and not have(WriteResult):  # every family's test leaves its record
            callbacks.append(WriteResult())
        extra = {"callbacks": callbacks}
        if self.trainer_setup is not None:
            extra.update(self.trainer_setup(self, callbacks))
        return super().instantiate_trainer(**{**kwargs, **extra})

    def before_validate(self) -> None:
        self._resolve_ckpt_path("validate")

    def before_test(self) -> None:
        self._resolve_ckpt_path("test")
        self.config_init["test"]["verbose"] = False  # Lightning's table has unnamed, repeated columns: after_test

    def after_test(self) -> None:
        """The test metrics, one named column per evaluation split (``results.test_table``)."""
        from .results import test_table

        if self.trainer.is_global_zero and self.model.data is not None:
            data = self.model.data
            sizes = {s: len(data.split_rows[s]) for s in data.test_splits if s in data.split_rows}
            print(test_table(self.model.test_metrics, data.test_splits, sizes))

    def before_predict(self) -> None:
        self._resolve_ckpt_path("predict")

    def _resolve_ckpt_path(self, subcommand: str) -> None:
        """``--ckpt_path best|last`` in a fresh process: this config's own checkpoint, found inside its
        run folder (the logger's folder) among the checkpoints stamped with this recipe's fingerprint;
        a named checkpoint whose weights do not fit the model is refused before any work, naming both."""
        init = self.config_init[subcommand]
        which = init.get("ckpt_path")
        kept = self.trainer.checkpoint_callback
        if which in ("best", "last") and not (kept is not None and kept.best_model_path):
            init["ckpt_path"] = str(self._checkpoint_on_disk(which))
        if init.get("ckpt_path") not in (None, "best", "last"):
            check_checkpoint_fits(Path(init["ckpt_path"]), self.model)

    def _checkpoint_on_disk(self, which: str) -> Path:
        """This config's ``last.ckpt`` under its logger folder (or the best checkpoint its ModelCheckpoint
        recorded), read with weights_only: among the checkpoints of this config's model class, those
        stamped with this recipe's fingerprint, else (another recipe of the same class, e.g. a predict with
        other test-time arguments) the only run of that class there. Another class's checkpoint is never
        taken; several candidate runs are refused, naming them (pass the path)."""
        import torch

        from .recipe import fingerprint

        logger = self.trainer.logger
        root = Path(logger.root_dir if logger is not None else self.trainer.default_root_dir)
        found = sorted(root.glob("**/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise SystemExit(f"cxrbench: error: --ckpt_path {which}: no checkpoints/last.ckpt under {root} "
                             "(run `cxrbench fit` with this config first, or give the checkpoint's path)")
        mine = fingerprint(self.recipe)
        ours = getattr((self.config.get(self.subcommand) or {}).get("model"), "class_path", None)
        states = {p: torch.load(p, map_location="cpu", weights_only=True, mmap=True) for p in found}  # mmap: no full read
        klass = {p: st.get("hyper_parameters", {}).get("_class_path") for p, st in states.items()}
        mine_class = [p for p in found if klass[p] and same_class(klass[p], ours)]
        exact = [p for p in mine_class if states[p].get("cxrbench_recipe", {}).get("fingerprint") == mine]
        pool = exact or mine_class
        if not pool:
            raise SystemExit(f"cxrbench: error: --ckpt_path {which}: none of the {len(found)} checkpoints under {root} "
                             f"is of this config's model {ours} (found: {', '.join(sorted({str(k) for k in klass.values()}))}); "
                             "give the checkpoint's path")
        runs = sorted({p.parent.parent for p in pool})
        if len(runs) > 1:
            raise SystemExit(f"cxrbench: error: --ckpt_path {which} is ambiguous: {len(runs)} runs of "
                             f"{'this recipe' if exact else ours} under {root} "
                             f"({', '.join(str(r.relative_to(root)) for r in runs)}); give the checkpoint's path")
        last = pool[-1]
        if not exact:
            print(f"cxrbench: note: --ckpt_path {which}: {last} is the only {ours} run under {root}, trained with "
                  "another recipe than this config's (other model or trainer arguments)", file=sys.stderr)
        if which == "last":
            return last
        best = [v.get("best_model_path") for k, v in states[last].get("callbacks", {}).items()
                if k.startswith("ModelCheckpoint")]
        best = [b for b in best if b and Path(b).is_file()]
        if not best:
            raise SystemExit(f"cxrbench: error: --ckpt_path best: {last} records no best checkpoint that exists; "
                             "use --ckpt_path last or a path")
        return Path(best[0])

    def add_arguments_to_parser(self, parser) -> None:
        # The model learns its classes from the data: one source of truth, no config drift.
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.classes", "model.init_args.class_names", apply_on="instantiate")
        parser.link_arguments("data.task", "model.init_args.task", apply_on="instantiate")


def same_class(a: str, b: str) -> bool:
    """One class under two dotted names (``cxrbench.methods.AMM`` and ``cxrbench.methods.amm.AMM``)."""
    if a == b:
        return True
    from jsonargparse.typing import import_object

    try:
        return import_object(a) is import_object(b)
    except (ImportError, AttributeError, ValueError):
        return False


def default_run_folder(config) -> None:
    """A config that names no logger writes to its own folder, ``runs/<config name>/version_N``, never into
    the ``lightning_logs`` every such config would share (where ``best|last`` could not tell them apart)."""
    from jsonargparse import Namespace

    trainer = config.get("trainer")
    configs = config.get("config") or []
    if trainer is None or trainer.get("logger") not in (None, True) or trainer.get("default_root_dir") or not configs:
        return
    name = Path(str(getattr(configs[0], "relative", configs[0]))).stem
    trainer["logger"] = Namespace(class_path="lightning.pytorch.loggers.CSVLogger",
                                  init_args=Namespace(save_dir="runs", name=name))


def refuse_other_architecture(ckpt: str, class_path: str, config_args: dict, saved: dict, differ: list[str]) -> None:
    """``--ckpt_path`` of this config's method but another architecture (``backbone: resnet18`` in the
    config, ``resnet10t`` in the checkpoint): Lightning would quietly build the checkpoint's model and score
    it under this config's name. The config's model is built on the meta device (no memory, no weights)
    and its tensors compared with the checkpoint's; when they differ the run is refused here, before any
    work, naming the arguments on both sides. Arguments that leave the weights as they are (an lr, a
    threshold) only get the note below. A model that cannot be built without its data (an encoder
    artifact to read) is not checked here: ``check_checkpoint_fits`` still compares it once built."""
    import torch

    from jsonargparse.typing import import_object

    try:
        cls = import_object(class_path)
        linked = {k: saved[k] for k in ("num_classes", "class_names", "task") if k in saved}
        with torch.device("meta"):
            ours = cls(**{**linked, **config_args}).state_dict()
    except Exception:  # noqa: BLE001 - a model that needs its files or data to be built: checked after building
        return
    theirs = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True).get("state_dict", {})
    other = sorted(k for k in set(ours) | set(theirs)
                   if k not in ours or k not in theirs or tuple(ours[k].shape) != tuple(theirs[k].shape))
    if other:
        what = "; ".join(f"{k}: config {config_args[k]!r}, checkpoint {saved[k]!r}" for k in differ[:3])
        raise SystemExit(f"cxrbench: error: --ckpt_path {ckpt} holds another architecture than this config's "
                         f"{class_path.rsplit('.', 1)[-1]} ({what}; {len(other)} tensors differ, e.g. {other[0]}): "
                         "test it with the arguments it was trained with, or name a checkpoint of this architecture")


def check_checkpoint_fits(path: Path, model) -> None:
    """Refuse, before any work, a checkpoint whose weights are not this model's (another architecture or
    method): the tensors it lacks, has in excess or holds at other shapes are named."""
    import torch

    if not path.is_file():
        raise SystemExit(f"cxrbench: error: --ckpt_path {path}: no such file")
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("state_dict", {})
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    extra = sorted(set(state) - set(ours))
    shapes = sorted(k for k in set(ours) & set(state) if tuple(ours[k].shape) != tuple(state[k].shape))
    if missing or extra or shapes:
        what = "; ".join(f"{n} {label}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
                         for label, keys in (("missing", missing), ("unexpected", extra), ("of another shape", shapes))
                         for n in [len(keys)] if keys)
        raise SystemExit(f"cxrbench: error: --ckpt_path {path} holds the weights of another model than this config's "
                         f"{type(model).__name__} ({what})")


def _model_class(model):
    """The class a parsed ``model`` config names (None when it cannot be imported here)."""
    from jsonargparse.typing import import_object

    try:
        return import_object(getattr(model, "class_path", None) or "")
    except (ImportError, AttributeError, ValueError):
        return None


def gpu_defaults(trainer, data_init) -> None:
    """On CUDA, what costs nothing in results and saves time (issue 33): pinned host memory for the loaders'
    batches (Lightning then copies them to the device without blocking) and cuDNN's autotuner (``benchmark``:
    the fastest convolution algorithm for each input shape; the configs' shapes are fixed). Both are
    left as a config sets them, and neither is part of a recipe (``recipe.DATA_VOLATILE``,
    ``TRAINER_VOLATILE``). Off on the CPU, where they do nothing. TF32 matmuls and bf16 autocast change
    the numbers and are not defaults."""
    if trainer is None or not on_gpu(trainer.get("accelerator")):
        return
    if trainer.get("benchmark") is None and not trainer.get("deterministic"):  # the autotuner is not deterministic
        trainer["benchmark"] = True
    if data_init is not None and data_init.get("pin_memory") is None:
        data_init["pin_memory"] = True


def on_gpu(accelerator) -> bool:
    """Whether a Trainer with this accelerator will run on CUDA devices."""
    import torch

    return accelerator not in ("cpu", "mps") and torch.cuda.is_available()


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


def build_cli(args: list[str], run: bool = True, trainer_setup=None) -> CXRBenchCLI:
    import data_modules

    # jsonargparse resolves a short class name (--data NIH) among the loaded subclasses, and data_modules
    # loads its DataModules on first use: load them before the parser is built
    data_modules.DATAMODULES, data_modules.NIHCrops  # noqa: B018
    return CXRBenchCLI(Method, CXRDataModule, subclass_mode_model=True, subclass_mode_data=True, args=args,
                       run=run, save_config_kwargs={"overwrite": True}, trainer_setup=trainer_setup)


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
