"""Root configs by ``recipe:`` name: each recipe's config registers itself here.

    @register_config("ranking")
    @dataclasses.dataclass
    class RankingConfig(RunConfig): ...

The loader (:mod:`tfrec_attn.config.loader`) knows no recipe: it asks this registry for the
class a file's ``recipe:`` key names, and the command line dispatches through it.
"""

from __future__ import annotations

from tfrec_attn.config.errors import ConfigError

_CONFIGS: dict[str, type] = {}


def register_config(name: str):
    """Class decorator: ``name`` (a config's ``recipe:`` value) -> this root config class."""

    def register(cls):
        if _CONFIGS.get(name, cls) is not cls:
            raise ValueError(f"recipe {name!r} is registered twice ({_CONFIGS[name].__name__}, {cls.__name__})")
        _CONFIGS[name] = cls
        cls.recipe_name = name
        return cls

    return register


def recipe_names() -> tuple[str, ...]:
    """Every registered recipe name, sorted."""
    return tuple(sorted(_CONFIGS))


def config_class(name: str, where: str = "recipe") -> type:
    """The root config class registered under ``name``; a :class:`ConfigError` naming
    ``where`` and the known names otherwise."""
    try:
        return _CONFIGS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"{where}: recipe={name!r} is not a known recipe; known: "
                          f"{', '.join(recipe_names())}") from None
