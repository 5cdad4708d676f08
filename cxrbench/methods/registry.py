"""The method registry: a method is named once, by ``@register("name")`` on its class.

``METHODS`` (registry name -> LightningModule class) is what ``cxrbench fit --model <name>`` and the
CLI's epilog read. Registering sets the class's ``method_name`` (the name its result records carry),
so the name cannot drift from the registry. Two classes under one name, or one class under two names,
are refused when the second module is imported, as is a method whose ``data_needs`` names a field
the data contract (``data_modules.contract``) does not have.
"""

from __future__ import annotations

METHODS: dict[str, type] = {}


class RegistryError(ValueError):
    pass


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(name: str):
    """Class decorator: ``@register("simclr") class SimCLR(PretrainingMethod): ...``."""
    if not isinstance(name, str) or not name or name != name.strip() or any(c.isspace() for c in name):
        raise RegistryError(f"a method's registry name is a non-empty word such as 'simclr'; got {name!r}")

    def decorate(cls: type) -> type:
        held = METHODS.get(name)
        # re-importing the same module (e.g. a reload) registers the same class again: not a conflict
        if held is not None and _where(held) != _where(cls):
            raise RegistryError(f"two methods registered as {name!r}: {_where(held)} and {_where(cls)}; "
                                "give the new one its own name")
        other = [n for n, c in METHODS.items() if n != name and _where(c) == _where(cls)]
        if other:
            raise RegistryError(f"{_where(cls)} is registered as {other[0]!r} already; one name per method")
        from data_modules.contract import contract_fields

        unknown = [n for n in getattr(cls, "data_needs", ()) if n not in contract_fields()]
        if unknown:
            raise RegistryError(f"{_where(cls)} needs {unknown} of the data contract, which has no such field; "
                                f"its fields are {', '.join(contract_fields())}")
        METHODS[name] = cls
        cls.method_name = name
        return cls

    return decorate


def method_class(name: str) -> type:
    """The class registered as ``name``, or a one-line error listing the registered names."""
    if name not in METHODS:
        raise RegistryError(f"no method registered as {name!r}; registered: {', '.join(sorted(METHODS))}")
    return METHODS[name]
